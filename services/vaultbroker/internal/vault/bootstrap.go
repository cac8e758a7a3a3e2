package vault

import (
	"context"
	"errors"
	"fmt"
	"strings"

	vaultapi "github.com/hashicorp/vault-client-go"
)

// Bootstrap prepares what all tenants share, once per Vault cluster, with an administrator
// token (the root token in dev): in mount mode the JWT auth method jwt-bulkhead with its trust
// configuration and the shared transit mount; in namespace mode the parent namespace chain. In
// both it writes ProvisionerPolicy as ProvisionerPolicyName (in the parent namespace in
// namespace mode), so an operator can then issue the provisioner's token. Idempotent.
//
// It is kept apart from the Provisioner on purpose: changing the JWT trust is the one thing
// that would let a credential mint its way into every tenant, so the provisioner's policy does
// not allow it in mount mode.
func Bootstrap(ctx context.Context, cfg Config, adminToken string) (ProvisionResult, error) {
	var res ProvisionResult
	c, err := cfg.withDefaults()
	if err != nil {
		return res, err
	}
	defer c.closeIdle()
	if adminToken == "" {
		return res, errors.New("vault bootstrap: admin token is required")
	}
	client, err := newAPIClient(&c)
	if err != nil {
		return res, err
	}
	if err := client.SetToken(adminToken); err != nil {
		return res, err
	}
	var policyOpts []vaultapi.RequestOption
	switch c.Mode {
	case ModeMount:
		if err := c.Trust.validate(); err != nil {
			return res, err
		}
		steps := []struct {
			name string
			fn   func() (bool, error)
		}{
			{"jwt auth method", func() (bool, error) { return ensureAuthMount(ctx, client, nil) }},
			{"jwt trust", func() (bool, error) { return ensureJWTConfig(ctx, client, &c, nil) }},
			{"transit mount", func() (bool, error) { return ensureMount(ctx, client, TransitMount, "transit", nil, nil) }},
		}
		for _, s := range steps {
			changed, err := s.fn()
			if err != nil {
				return res, provisionError("bootstrap "+s.name, err)
			}
			if changed {
				res.add(s.name)
			}
		}
	case ModeNamespace:
		// Create each segment of the parent path, e.g. bulkhead, then bulkhead/tenants.
		parent := ""
		for _, seg := range strings.Split(c.NamespaceParent, "/") {
			var opts []vaultapi.RequestOption
			if parent != "" {
				opts = append(opts, vaultapi.WithNamespace(parent))
			}
			if _, err := client.Read(ctx, "sys/namespaces/"+seg, opts...); err != nil {
				if !isMissing(err) {
					return res, provisionError("bootstrap namespace "+seg, err)
				}
				if _, err := client.Write(ctx, "sys/namespaces/"+seg, map[string]any{}, opts...); err != nil {
					return res, provisionError(fmt.Sprintf("bootstrap: create namespace %s under %q", seg, parent), err)
				}
				res.add("namespace " + strings.TrimPrefix(parent+"/"+seg, "/"))
			}
			parent = strings.TrimPrefix(parent+"/"+seg, "/")
		}
		policyOpts = []vaultapi.RequestOption{vaultapi.WithNamespace(c.NamespaceParent)}
	}
	path := "sys/policies/acl/" + ProvisionerPolicyName
	want := ProvisionerPolicy(c.Mode)
	resp, err := client.Read(ctx, path, policyOpts...)
	if err != nil && !isMissing(err) {
		return res, provisionError("bootstrap provisioner policy", err)
	}
	if err != nil || resp == nil || asString(resp.Data["policy"]) != want {
		if _, err := client.Write(ctx, path, map[string]any{"policy": want}, policyOpts...); err != nil {
			return res, provisionError("bootstrap provisioner policy", err)
		}
		res.add("provisioner policy")
	}
	return res, nil
}
