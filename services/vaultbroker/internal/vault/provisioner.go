package vault

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	vaultapi "github.com/hashicorp/vault-client-go"
)

// ProvisionResult lists the steps that changed Vault. It is empty when the layout was already
// in the desired state, which is how callers (and tests) see that provisioning is a no-op.
type ProvisionResult struct {
	Changes []string
}

func (r *ProvisionResult) add(step string) { r.Changes = append(r.Changes, step) }

// Provisioner creates and deletes tenants' Vault layouts with the provisioner credential. It
// is never used on the request path: serving a tenant goes through Broker and the tenant's own
// token.
type Provisioner struct {
	cfg    Config
	client *vaultapi.Client // token = provisioner token; namespace passed per request
}

// NewProvisioner returns a Provisioner for the verified server, authenticating with token (a
// token carrying ProvisionerPolicy, see deploy/vault/).
func NewProvisioner(cfg Config, v *Verified, token string) (*Provisioner, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := v.matches(&c); err != nil {
		return nil, err
	}
	if c.Mode == ModeNamespace {
		if err := c.Trust.validate(); err != nil {
			return nil, err
		}
	}
	client, err := newAPIClient(&c)
	if err != nil {
		return nil, err
	}
	if err := client.SetToken(token); err != nil {
		return nil, fmt.Errorf("provisioner token: %w", err)
	}
	return &Provisioner{cfg: c, client: client}, nil
}

// Close releases the provisioner's idle connections to Vault.
func (p *Provisioner) Close() { p.cfg.closeIdle() }

func (t JWTTrust) validate() error {
	switch {
	case t.JWKSURL == "" && len(t.ValidationPubKeys) == 0:
		return errors.New("vault jwt trust: set a JWKS URL or validation public keys")
	case t.JWKSURL != "" && len(t.ValidationPubKeys) > 0:
		return errors.New("vault jwt trust: set a JWKS URL or validation public keys, not both")
	}
	return nil
}

// Provision makes tenant's layout exist and match the configuration: namespace (namespace
// mode), JWT auth method and trust (namespace mode), KV v2 mount with check-and-set required,
// transit key, policy, and — last, so that nobody can log in to a half-built layout — the JWT
// role. Every step reads before it writes, so a second call changes nothing and a call after a
// partial failure completes the layout.
func (p *Provisioner) Provision(ctx context.Context, tenant string) (ProvisionResult, error) {
	var res ProvisionResult
	if err := validateTenant(tenant); err != nil {
		return res, err
	}
	l := p.cfg.layout(tenant)
	steps := []struct {
		name string
		fn   func(context.Context, layout) (bool, error)
	}{
		{"namespace", p.ensureNamespace},
		{"jwt auth method", p.ensureTenantAuth},
		{"kv mount", p.ensureKVMount},
		{"kv config", p.ensureKVConfig},
		{"transit mount", p.ensureTenantTransitMount},
		{"transit key", p.ensureKey},
		{"policy", p.ensurePolicy},
		{"jwt role", p.ensureRole},
	}
	for _, s := range steps {
		changed, err := s.fn(ctx, l)
		if err != nil {
			return res, provisionError("provision "+s.name, err)
		}
		if changed {
			res.add(s.name)
		}
	}
	return res, nil
}

// Deprovision deletes tenant's layout — crypto-shredding: the KV mount (every version of every
// credential) and the transit key are destroyed, so secrets and data encrypted with the key are
// unrecoverable. The role goes first (no new logins), then the policy (tokens already issued
// lose all access at once). In namespace mode the namespace is deleted, which Vault does
// asynchronously; Deprovision waits until it is gone or ctx ends. Idempotent.
func (p *Provisioner) Deprovision(ctx context.Context, tenant string) (ProvisionResult, error) {
	var res ProvisionResult
	if err := validateTenant(tenant); err != nil {
		return res, err
	}
	l := p.cfg.layout(tenant)
	if p.cfg.Mode == ModeNamespace {
		exists, err := p.exists(ctx, "sys/namespaces/"+tenant, p.parentOpts())
		if err != nil || !exists {
			return res, provisionError("deprovision namespace", err)
		}
	}
	steps := []struct {
		name string
		fn   func(context.Context, layout) (bool, error)
	}{
		{"jwt role", p.deleteRole},
		{"policy", p.deletePolicy},
		{"transit key", p.deleteKey},
		{"kv mount", p.deleteKVMount},
		{"namespace", p.deleteNamespace},
	}
	for _, s := range steps {
		changed, err := s.fn(ctx, l)
		if err != nil {
			return res, provisionError("deprovision "+s.name, err)
		}
		if changed {
			res.add(s.name)
		}
	}
	return res, nil
}

// provisionError keeps only the unavailability classification: other provisioning failures are
// configuration or permission problems for an operator, not the caller's bad input.
func provisionError(op string, err error) error {
	if err == nil {
		return nil
	}
	if c := classify(op, err); errors.Is(c, ErrUnavailable) {
		return c
	}
	return fmt.Errorf("%s: %w", op, err)
}

// opts returns the per-request namespace of l (none in mount mode).
func (p *Provisioner) opts(l layout) []vaultapi.RequestOption {
	if l.namespace == "" {
		return nil
	}
	return []vaultapi.RequestOption{vaultapi.WithNamespace(l.namespace)}
}

func (p *Provisioner) parentOpts() []vaultapi.RequestOption {
	return []vaultapi.RequestOption{vaultapi.WithNamespace(p.cfg.NamespaceParent)}
}

// read returns the data at path, or nil when Vault says it does not exist (404, or the 400
// "No secret engine mount at"/"No auth engine at" of sys/mounts/<path> and sys/auth/<path>).
func (p *Provisioner) read(ctx context.Context, path string, opts []vaultapi.RequestOption) (map[string]any, error) {
	resp, err := p.client.Read(ctx, path, opts...)
	if err != nil {
		if isMissing(err) {
			return nil, nil
		}
		return nil, err
	}
	if resp == nil || resp.Data == nil {
		return map[string]any{}, nil
	}
	return resp.Data, nil
}

func (p *Provisioner) exists(ctx context.Context, path string, opts []vaultapi.RequestOption) (bool, error) {
	data, err := p.read(ctx, path, opts)
	return data != nil, err
}

func isMissing(err error) bool {
	switch statusOf(err) {
	case http.StatusNotFound:
		return true
	case http.StatusBadRequest:
		msg := messageOf(err)
		return strings.HasPrefix(msg, "No secret engine mount at") || strings.HasPrefix(msg, "No auth engine at")
	}
	return false
}

func (p *Provisioner) ensureNamespace(ctx context.Context, l layout) (bool, error) {
	if l.namespace == "" {
		return false, nil
	}
	ok, err := p.exists(ctx, "sys/namespaces/"+l.tenant, p.parentOpts())
	if err != nil || ok {
		return false, err
	}
	_, err = p.client.Write(ctx, "sys/namespaces/"+l.tenant, map[string]any{}, p.parentOpts()...)
	return err == nil, err
}

func (p *Provisioner) ensureTenantAuth(ctx context.Context, l layout) (bool, error) {
	if l.namespace == "" {
		return false, nil // mount mode: one shared auth method, set up by Bootstrap
	}
	mounted, err := ensureAuthMount(ctx, p.client, p.opts(l))
	if err != nil {
		return false, err
	}
	configured, err := ensureJWTConfig(ctx, p.client, &p.cfg, p.opts(l))
	return mounted || configured, err
}

func (p *Provisioner) ensureKVMount(ctx context.Context, l layout) (bool, error) {
	return ensureMount(ctx, p.client, l.kvMount, "kv", map[string]any{"version": "2"}, p.opts(l))
}

func (p *Provisioner) ensureTenantTransitMount(ctx context.Context, l layout) (bool, error) {
	if l.namespace == "" {
		return false, nil // mount mode: one shared transit mount, set up by Bootstrap
	}
	return ensureMount(ctx, p.client, l.transitMount, "transit", nil, p.opts(l))
}

// ensureKVConfig makes Vault itself refuse writes without check-and-set (cas_required), so a
// code path that forgot the cas option cannot silently overwrite a concurrent refresh.
func (p *Provisioner) ensureKVConfig(ctx context.Context, l layout) (bool, error) {
	data, err := p.read(ctx, l.kvConfigPath(), p.opts(l))
	if err != nil {
		return false, err
	}
	if data != nil && asBool(data["cas_required"]) && asInt(data["max_versions"]) == int64(p.cfg.KVMaxVersions) {
		return false, nil
	}
	err = retryWhileUpgrading(ctx, func() error {
		_, err := p.client.Write(ctx, l.kvConfigPath(), map[string]any{
			"cas_required": true,
			"max_versions": p.cfg.KVMaxVersions,
		}, p.opts(l)...)
		return err
	})
	return err == nil, err
}

func (p *Provisioner) ensureKey(ctx context.Context, l layout) (bool, error) {
	ok, err := p.exists(ctx, l.keyPath(), p.opts(l))
	if err != nil || ok {
		return false, err
	}
	// Not exportable, no plaintext backup: the key never leaves Vault, so deleting it shreds.
	_, err = p.client.Write(ctx, l.keyPath(), map[string]any{"type": "aes256-gcm96"}, p.opts(l)...)
	return err == nil, err
}

func (p *Provisioner) ensurePolicy(ctx context.Context, l layout) (bool, error) {
	want := l.tenantPolicy()
	data, err := p.read(ctx, l.policyPath(), p.opts(l))
	if err != nil {
		return false, err
	}
	if data != nil && asString(data["policy"]) == want {
		return false, nil
	}
	_, err = p.client.Write(ctx, l.policyPath(), map[string]any{"policy": want}, p.opts(l)...)
	return err == nil, err
}

// roleBody is the tenant's JWT role. user_claim is tid, not sub: Vault creates one entity per
// distinct user-claim value, and sub varies per caller (every user, service account…), which
// would grow Vault's entity store without bound; tid gives exactly one entity per tenant.
func (c *Config) roleBody(l layout) map[string]any {
	bound := map[string]any{"tid": l.tenant}
	if c.Actor != "" {
		// A JSON pointer: Vault's JWT auth reads the nested act.sub claim.
		bound["/act/sub"] = c.Actor
	}
	return map[string]any{
		"role_type":               "jwt",
		"bound_audiences":         []string{c.Audience},
		"bound_claims":            bound,
		"bound_claims_type":       "string",
		"user_claim":              "tid",
		"token_policies":          []string{l.policy},
		"token_no_default_policy": true,
		"token_ttl":               int64(c.TokenTTL / time.Second),
		"token_max_ttl":           int64(c.TokenMaxTTL / time.Second),
		"token_type":              string(c.TokenType),
	}
}

func (p *Provisioner) ensureRole(ctx context.Context, l layout) (bool, error) {
	want := p.cfg.roleBody(l)
	got, err := p.read(ctx, l.rolePath(), p.opts(l))
	if err != nil {
		return false, err
	}
	if got != nil && roleMatches(got, want) {
		return false, nil
	}
	_, err = p.client.Write(ctx, l.rolePath(), want, p.opts(l)...)
	return err == nil, err
}

func roleMatches(got, want map[string]any) bool {
	claims, wantClaims := asMap(got["bound_claims"]), want["bound_claims"].(map[string]any)
	sameClaims := len(claims) == len(wantClaims)
	for k, v := range wantClaims {
		sameClaims = sameClaims && asString(claims[k]) == v
	}
	return asString(got["role_type"]) == want["role_type"] &&
		slices.Equal(asStrings(got["bound_audiences"]), want["bound_audiences"].([]string)) &&
		sameClaims &&
		asString(got["bound_claims_type"]) == want["bound_claims_type"] &&
		asString(got["user_claim"]) == want["user_claim"] &&
		slices.Equal(asStrings(got["token_policies"]), want["token_policies"].([]string)) &&
		asBool(got["token_no_default_policy"]) &&
		asInt(got["token_ttl"]) == want["token_ttl"] &&
		asInt(got["token_max_ttl"]) == want["token_max_ttl"] &&
		asString(got["token_type"]) == want["token_type"]
}

func (p *Provisioner) deleteRole(ctx context.Context, l layout) (bool, error) {
	return p.deleteIfExists(ctx, l.rolePath(), l.rolePath(), p.opts(l))
}

func (p *Provisioner) deletePolicy(ctx context.Context, l layout) (bool, error) {
	return p.deleteIfExists(ctx, l.policyPath(), l.policyPath(), p.opts(l))
}

func (p *Provisioner) deleteKey(ctx context.Context, l layout) (bool, error) {
	ok, err := p.exists(ctx, l.keyPath(), p.opts(l))
	if err != nil || !ok {
		return false, err
	}
	// Transit refuses to delete a key unless deletion was allowed first.
	if _, err := p.client.Write(ctx, l.keyPath()+"/config", map[string]any{"deletion_allowed": true}, p.opts(l)...); err != nil {
		return false, err
	}
	_, err = p.client.Delete(ctx, l.keyPath(), p.opts(l)...)
	return err == nil, err
}

func (p *Provisioner) deleteKVMount(ctx context.Context, l layout) (bool, error) {
	return p.deleteIfExists(ctx, l.kvMountPath(), l.kvMountPath(), p.opts(l))
}

func (p *Provisioner) deleteNamespace(ctx context.Context, l layout) (bool, error) {
	if l.namespace == "" {
		return false, nil
	}
	path := "sys/namespaces/" + l.tenant
	changed, err := p.deleteIfExists(ctx, path, path, p.parentOpts())
	if err != nil {
		return changed, err
	}
	// Namespace deletion is asynchronous: wait until the namespace is really gone so that a
	// re-provision right after does not race the deletion.
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := p.exists(ctx, path, p.parentOpts())
		if err != nil || !ok {
			return changed, err
		}
		select {
		case <-ctx.Done():
			return changed, fmt.Errorf("namespace %s still being deleted: %w", l.namespace, ctx.Err())
		case <-tick.C:
		}
	}
}

func (p *Provisioner) deleteIfExists(ctx context.Context, readPath, deletePath string, opts []vaultapi.RequestOption) (bool, error) {
	ok, err := p.exists(ctx, readPath, opts)
	if err != nil || !ok {
		return false, err
	}
	_, err = p.client.Delete(ctx, deletePath, opts...)
	return err == nil, err
}

// Shared helpers (Bootstrap and Provisioner).

func ensureMount(ctx context.Context, client *vaultapi.Client, path, typ string, options map[string]any, opts []vaultapi.RequestOption) (bool, error) {
	resp, err := client.Read(ctx, "sys/mounts/"+path, opts...)
	if err == nil && resp != nil {
		if got := asString(resp.Data["type"]); got != typ {
			return false, fmt.Errorf("mount %s exists with type %q, want %q", path, got, typ)
		}
		if v, ok := options["version"]; ok && asString(asMap(resp.Data["options"])["version"]) != v {
			return false, fmt.Errorf("mount %s exists with options %v, want %v", path, resp.Data["options"], options)
		}
		return false, nil
	}
	if err != nil && !isMissing(err) {
		return false, err
	}
	body := map[string]any{"type": typ}
	if options != nil {
		body["options"] = options
	}
	_, err = client.Write(ctx, "sys/mounts/"+path, body, opts...)
	return err == nil, err
}

func ensureAuthMount(ctx context.Context, client *vaultapi.Client, opts []vaultapi.RequestOption) (bool, error) {
	resp, err := client.Read(ctx, "sys/auth/"+JWTAuthMount, opts...)
	if err == nil && resp != nil {
		if got := asString(resp.Data["type"]); got != "jwt" {
			return false, fmt.Errorf("auth method %s exists with type %q, want jwt", JWTAuthMount, got)
		}
		return false, nil
	}
	if err != nil && !isMissing(err) {
		return false, err
	}
	_, err = client.Write(ctx, "sys/auth/"+JWTAuthMount, map[string]any{"type": "jwt"}, opts...)
	return err == nil, err
}

func ensureJWTConfig(ctx context.Context, client *vaultapi.Client, c *Config, opts []vaultapi.RequestOption) (bool, error) {
	path := "auth/" + JWTAuthMount + "/config"
	t := c.Trust
	body := map[string]any{
		"bound_issuer":       t.BoundIssuer,
		"jwt_supported_algs": t.Algorithms,
	}
	if t.JWKSURL != "" {
		body["jwks_url"] = t.JWKSURL
		body["jwks_ca_pem"] = t.JWKSCAPEM
	} else {
		body["jwt_validation_pubkeys"] = t.ValidationPubKeys
	}
	resp, err := client.Read(ctx, path, opts...)
	if err != nil && !isMissing(err) {
		return false, err
	}
	if err == nil && resp != nil {
		got := resp.Data
		if asString(got["bound_issuer"]) == t.BoundIssuer &&
			slices.Equal(asStrings(got["jwt_supported_algs"]), t.Algorithms) &&
			asString(got["jwks_url"]) == t.JWKSURL &&
			strings.TrimSpace(asString(got["jwks_ca_pem"])) == strings.TrimSpace(t.JWKSCAPEM) &&
			slices.Equal(trimAll(asStrings(got["jwt_validation_pubkeys"])), trimAll(t.ValidationPubKeys)) {
			return false, nil
		}
	}
	_, err = client.Write(ctx, path, body, opts...)
	return err == nil, err
}

func trimAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strings.TrimSpace(s)
	}
	return out
}

// retryWhileUpgrading retries fn while a fresh KV v2 mount is still upgrading its storage
// (Vault answers "Upgrading from non-versioned to versioned data…" for a moment).
func retryWhileUpgrading(ctx context.Context, fn func() error) error {
	deadline := time.Now().Add(15 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := fn()
		if err == nil || !strings.Contains(strings.ToLower(messageOf(err)), "upgrad") || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}
