// Package identity is the vault-broker's client of the identity service: a thin wrapper of
// pkg/identityclient (the broker's own service token, the kill switch) with what is the
// broker's own:
//
//   - its service token has audience bulkhead.identity only: it is good for calling identity
//     and nothing else;
//   - a vault.JWTSource: the JWT the broker presents to Vault's JWT auth to act for tenant T is
//     obtained by ExchangeToken with the *incoming request's own bearer token* as subject
//     token, so the broker can only get T's Vault identity while serving a caller who really
//     presented a token of T (identity verifies it, kill switch included);
//   - any other refusal of identity (NotFound included) is the broker's problem: Internal.
package identity

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"

	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/pkg/authn"
	"github.com/bulkhead/bulkhead/pkg/claims"
	"github.com/bulkhead/bulkhead/pkg/identityclient"
)

// Audiences used by the broker.
const (
	// AudienceIdentity is the only audience of the broker's own service token.
	AudienceIdentity = identityclient.AudienceIdentity
	// AudienceVault is the audience Vault's JWT auth requires of a tenant JWT.
	AudienceVault = "bulkhead.vault"
)

// Config configures a Client.
type Config struct {
	// Conn is a connection to identity's gRPC server. The Client does not close it.
	Conn grpc.ClientConnInterface
	// ClientID and ClientSecret are the broker's platform credential on identity.
	ClientID     string
	ClientSecret string
	// VaultAudience is the audience of tenant JWTs (default AudienceVault).
	VaultAudience string
	// CallTimeout bounds each call to identity (default 5s).
	CallTimeout time.Duration
	// Now is the clock for renewal decisions; nil means time.Now.
	Now func() time.Time
}

// Client obtains the broker's tokens from identity. Safe for concurrent use.
type Client struct {
	c        *identityclient.Client
	vaultAud string
}

// New checks cfg and returns a Client. It does not call identity yet.
func New(cfg Config) (*Client, error) {
	if cfg.VaultAudience == "" {
		cfg.VaultAudience = AudienceVault
	}
	c, err := identityclient.New(identityclient.Config{
		Conn: cfg.Conn, ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret,
		Audience:    []string{AudienceIdentity},
		CallTimeout: cfg.CallTimeout, Now: cfg.Now,
	})
	if err != nil {
		return nil, err
	}
	return &Client{c: c, vaultAud: cfg.VaultAudience}, nil
}

// Stats counts calls to identity, for tests and metrics.
type Stats struct {
	ServiceTokensIssued int64 // IssueToken calls that succeeded
	VaultJWTsExchanged  int64 // ExchangeToken calls that succeeded
}

// Stats returns the counters. The broker exchanges for Vault JWTs only, so every exchange
// counted by the shared client is one.
func (c *Client) Stats() Stats {
	s := c.c.Stats()
	return Stats{ServiceTokensIssued: s.ServiceTokensIssued, VaultJWTsExchanged: s.TokensExchanged}
}

// ServiceToken returns the broker's own token, renewed before it expires.
func (c *Client) ServiceToken(ctx context.Context) (string, error) { return c.c.ServiceToken(ctx) }

// VaultJWT implements vault.JWTSource. The subject token is the bearer token of the request
// being served (claims in ctx, put there by authentication), and it must belong to tenantID:
// the broker cannot obtain a tenant's Vault identity without a caller of that tenant.
func (c *Client) VaultJWT(ctx context.Context, tenantID string) (string, error) {
	cl, ok := claims.FromContext(ctx)
	switch {
	case !ok || cl.Token == "":
		return "", apierr.Internal(errors.New("vault jwt: no verified caller token in the request context"))
	case cl.TenantID == "" || cl.TenantID != tenantID:
		return "", apierr.Internal(fmt.Errorf("vault jwt: caller's tenant %q is not %q", cl.TenantID, tenantID))
	}
	return c.c.Exchange(ctx, "exchange for a vault jwt", &identityv1.ExchangeTokenRequest{
		SubjectToken: cl.Token,
		Audience:     []string{c.vaultAud},
	})
}

// TenantState implements authn.TenantStatus with GetTenantStatus. An unknown tenant is
// (StateInactive, nil).
func (c *Client) TenantState(ctx context.Context, tenantID string) (authn.TenantState, error) {
	return c.c.TenantState(ctx, tenantID)
}
