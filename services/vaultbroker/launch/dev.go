package launch

import (
	"context"
	"errors"
	"fmt"
	"time"

	vaultapi "github.com/hashicorp/vault-client-go"

	"github.com/bulkhead/bulkhead/services/vaultbroker/internal/vault"
)

// DevProvisionerToken prepares a development Vault (mount mode) the way an operator would with
// deploy/vault/README.md: vault.Bootstrap with the admin token (JWT auth trusting identity's
// JWKS, the shared transit mount, the provisioner policy), then a provisioner token that carries
// only that policy. `make run` uses it; production operators run these steps themselves and
// never hand the broker an admin token.
func DevProvisionerToken(ctx context.Context, cfg Config, adminToken string) (string, error) {
	if cfg.VaultMode != string(vault.ModeMount) {
		return "", errors.New("launch: dev bootstrap supports mount mode only")
	}
	vcfg := vault.Config{
		Addr:  cfg.VaultAddr,
		Mode:  vault.ModeMount,
		Trust: vault.JWTTrust{JWKSURL: cfg.JWKSURLForVault(), BoundIssuer: cfg.Issuer},
	}
	if _, err := vault.Bootstrap(ctx, vcfg, adminToken); err != nil {
		return "", fmt.Errorf("launch: vault bootstrap: %w", err)
	}
	client, err := vaultapi.New(vaultapi.WithAddress(cfg.VaultAddr), vaultapi.WithRequestTimeout(30*time.Second))
	if err != nil {
		return "", fmt.Errorf("launch: vault client: %w", err)
	}
	defer client.Configuration().HTTPClient.CloseIdleConnections()
	// The admin token goes per request, never client-wide (vault-client-go cannot clear a
	// client-wide token; see services/vaultbroker/README.md).
	resp, err := client.Write(ctx, "auth/token/create", map[string]any{
		"policies": []string{vault.ProvisionerPolicyName}, "no_default_policy": true, "ttl": "24h",
	}, vaultapi.WithToken(adminToken))
	if err != nil {
		return "", fmt.Errorf("launch: provisioner token: %w", err)
	}
	if resp.Auth == nil || resp.Auth.ClientToken == "" {
		return "", errors.New("launch: provisioner token: empty answer from Vault")
	}
	return resp.Auth.ClientToken, nil
}
