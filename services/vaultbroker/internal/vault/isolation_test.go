package vault_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/services/vaultbroker/internal/vault"
	"github.com/google/uuid"
	"github.com/lestrrat-go/jwx/v3/jwt"
)

// TestTenantTokenCannotReachOtherTenant takes the token the broker uses for tenant A and uses
// it directly — as a bug in the broker would — against tenant B's credential paths and
// transit key. Vault itself must answer 403 to every request; the same requests against A's
// own paths succeed (control).
func TestTenantTokenCannotReachOtherTenant(t *testing.T) {
	e := testEnv(t)
	ctx := context.Background()
	tenantA, tenantB := e.tenant(t), e.tenant(t)
	b := e.broker(t, nil)

	credA, credB := uuid.NewString(), uuid.NewString()
	if _, err := b.PutCredential(ctx, tenantA, credA, map[string]string{"k": "a"}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := b.PutCredential(ctx, tenantB, credB, map[string]string{"k": "b"}, 0); err != nil {
		t.Fatal(err)
	}
	ctB, _, err := b.Encrypt(ctx, tenantB, []byte("b's data"))
	if err != nil {
		t.Fatal(err)
	}
	ctA, _, err := b.Encrypt(ctx, tenantA, []byte("a's data"))
	if err != nil {
		t.Fatal(err)
	}
	tokenA, err := vault.TenantTokenForTest(ctx, b, tenantA)
	if err != nil {
		t.Fatal(err)
	}
	asA := e.rawClient(t, tokenA)

	kvA, kvB := vault.KVMountPrefix+"/"+tenantA, vault.KVMountPrefix+"/"+tenantB
	tr := vault.TransitMount
	type call func(tenantKV, key, cred, ciphertext string) error
	ops := []struct {
		name string
		call call
	}{
		{"read credential", func(kv, _, cred, _ string) error { _, err := asA.Read(ctx, kv+"/data/"+cred); return err }},
		{"overwrite credential", func(kv, _, cred, _ string) error {
			_, err := asA.Write(ctx, kv+"/data/"+cred, map[string]any{"data": map[string]any{"k": "x"}, "options": map[string]any{"cas": 1}})
			return err
		}},
		{"read metadata", func(kv, _, cred, _ string) error { _, err := asA.Read(ctx, kv+"/metadata/"+cred); return err }},
		{"encrypt with key", func(_, key, _, _ string) error {
			_, err := asA.Write(ctx, tr+"/encrypt/"+key, map[string]any{"plaintext": "aGk="})
			return err
		}},
		{"decrypt with key", func(_, key, _, ct string) error {
			_, err := asA.Write(ctx, tr+"/decrypt/"+key, map[string]any{"ciphertext": ct})
			return err
		}},
	}
	// Operations that would change A's own state run last in the control, and the destructive
	// ones only against B.
	destructive := []struct {
		name string
		call call
	}{
		{"rotate key", func(_, key, _, _ string) error { _, err := asA.Write(ctx, tr+"/keys/"+key+"/rotate", nil); return err }},
		{"delete credential", func(kv, _, cred, _ string) error { _, err := asA.Delete(ctx, kv+"/metadata/"+cred); return err }},
		{"list credentials", func(kv, _, _, _ string) error { _, err := asA.List(ctx, kv+"/metadata/"); return err }},
		{"read kv config", func(kv, _, _, _ string) error { _, err := asA.Read(ctx, kv+"/config"); return err }},
		{"read key", func(_, key, _, _ string) error { _, err := asA.Read(ctx, tr+"/keys/"+key); return err }},
	}
	for _, op := range append(ops, destructive...) {
		t.Run("tenant B/"+op.name, func(t *testing.T) {
			if err := op.call(kvB, tenantB, credB, ctB); statusOf(err) != http.StatusForbidden {
				t.Fatalf("A's token on B: %v, want 403 from vault", err)
			}
		})
	}
	for _, op := range ops {
		t.Run("tenant A (control)/"+op.name, func(t *testing.T) {
			if err := op.call(kvA, tenantA, credA, ctA); err != nil {
				t.Fatalf("A's token on A: %v", err)
			}
		})
	}
	// Beyond B: nothing outside A's own paths is reachable either.
	for name, path := range map[string]string{
		"sys mounts":        "sys/mounts",
		"policies":          "sys/policies/acl/" + vault.TenantPolicyPrefix + tenantB,
		"jwt role of B":     "auth/" + vault.JWTAuthMount + "/role/" + vault.TenantRolePrefix + tenantB,
		"cubbyhole":         "cubbyhole/x",
		"capabilities-self": "sys/capabilities-self",
	} {
		t.Run("elsewhere/"+name, func(t *testing.T) {
			if _, err := asA.Read(ctx, path); statusOf(err) != http.StatusForbidden {
				t.Fatalf("A's token on %s: %v, want 403", path, err)
			}
		})
	}

	// B's data is intact after all those attempts.
	got, err := b.GetCredential(ctx, tenantB, credB, 0)
	if err != nil || got.Data["k"] != "b" || got.Version != 1 {
		t.Fatalf("B's credential: %+v, %v", got, err)
	}
}

// TestJWTLoginBoundToTenant: Vault's JWT auth refuses to log in to tenant B's role with any JWT
// that is not a valid identity token for B.
func TestJWTLoginBoundToTenant(t *testing.T) {
	e := testEnv(t)
	ctx := context.Background()
	tenantA, tenantB := e.tenant(t), e.tenant(t)
	stranger, err := newSigner()
	if err != nil {
		t.Fatal(err)
	}
	anon := e.rawClient(t, "unused")
	anon.ClearToken()
	roleB := vault.TenantRolePrefix + tenantB

	tests := []struct {
		name string
		jwt  func() (string, error)
		ok   bool
	}{
		{"B's own jwt (control)", func() (string, error) { return e.signer.mint(tenantB) }, true},
		{"A's jwt", func() (string, error) { return e.signer.mint(tenantA) }, false},
		{"no tid", func() (string, error) {
			return e.signer.mint(tenantB, func(b *jwt.Builder) { b.Claim("tid", "") })
		}, false},
		{"wrong audience", func() (string, error) {
			return e.signer.mint(tenantB, func(b *jwt.Builder) { b.Audience([]string{"bulkhead.vaultbroker"}) })
		}, false},
		{"wrong issuer", func() (string, error) {
			return e.signer.mint(tenantB, func(b *jwt.Builder) { b.Issuer("someone-else") })
		}, false},
		{"expired", func() (string, error) {
			return e.signer.mint(tenantB, func(b *jwt.Builder) {
				b.IssuedAt(time.Now().Add(-time.Hour)).NotBefore(time.Now().Add(-time.Hour)).Expiration(time.Now().Add(-30 * time.Minute))
			})
		}, false},
		{"untrusted key", func() (string, error) { return stranger.mint(tenantB) }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			token, err := tc.jwt()
			if err != nil {
				t.Fatal(err)
			}
			resp, err := anon.Write(ctx, "auth/"+vault.JWTAuthMount+"/login", map[string]any{"role": roleB, "jwt": token})
			if tc.ok {
				if err != nil || resp.Auth == nil || resp.Auth.ClientToken == "" {
					t.Fatalf("login: %v", err)
				}
				return
			}
			if s := statusOf(err); s != http.StatusBadRequest && s != http.StatusForbidden {
				t.Fatalf("login with %s to B's role: %v, want 400/403 from vault", tc.name, err)
			}
		})
	}

	// Through the broker: a JWT source that hands out A's JWT when asked for B (a confused
	// caller layer) gets ErrLoginDenied, not B's secrets.
	lying := vault.JWTSourceFunc(func(context.Context, string) (string, error) { return e.signer.mint(tenantA) })
	b, err := vault.NewBroker(e.cfg, e.verified, lying)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	if _, err := b.GetCredential(ctx, tenantB, uuid.NewString(), 0); !errors.Is(err, vault.ErrLoginDenied) {
		t.Fatalf("broker with A's jwt for B: %v, want ErrLoginDenied", err)
	}
}

// TestWidenedRoleRefused: if someone edits a tenant's role to grant more than the tenant
// policy, the broker refuses the token it gets instead of using it.
func TestWidenedRoleRefused(t *testing.T) {
	e := testEnv(t)
	ctx := context.Background()
	tenant := e.tenant(t)
	path := "auth/" + vault.JWTAuthMount + "/role/" + vault.TenantRolePrefix + tenant
	role, err := e.root.Read(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	role.Data["token_policies"] = []string{vault.TenantPolicyPrefix + tenant, "bulkhead-provisioner-file"}
	if _, err := e.root.Write(ctx, path, role.Data); err != nil {
		t.Fatal(err)
	}
	b := e.broker(t, nil)
	if _, err := b.GetCredential(ctx, tenant, uuid.NewString(), 0); !errors.Is(err, vault.ErrPermissionDenied) {
		t.Fatalf("get with widened role: %v, want ErrPermissionDenied", err)
	}
}

// TestJWTLoginBoundToActor: with Config.Actor set, a tenant's role also requires act.sub, so
// only JWTs identity exchanged for the broker log in — not one identity issued to a service
// acting on its own (no act), nor one exchanged by another service. Re-provisioning an
// existing tenant adds the binding.
func TestJWTLoginBoundToActor(t *testing.T) {
	e := testEnv(t)
	ctx := context.Background()
	tenant := e.tenant(t) // provisioned without an actor binding
	cfg := e.cfg
	cfg.Actor = "svc:vaultbroker"
	prov, err := vault.NewProvisioner(cfg, e.verified, e.provToken)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prov.Close)
	res, err := prov.Provision(ctx, tenant)
	if err != nil || !slices.Equal(res.Changes, []string{"jwt role"}) {
		t.Fatalf("re-provision with an actor: %v, %v; want the role rewritten", res.Changes, err)
	}
	if res, err := prov.Provision(ctx, tenant); err != nil || len(res.Changes) != 0 {
		t.Fatalf("second provision: %v, %v; want no changes", res.Changes, err)
	}
	anon := e.rawClient(t, "unused")
	anon.ClearToken()
	act := func(sub string) claimsOpt {
		return func(b *jwt.Builder) { b.Claim("act", map[string]any{"sub": sub}) }
	}
	tests := []struct {
		name string
		opts []claimsOpt
		ok   bool
	}{
		{"exchanged for the broker", []claimsOpt{act("svc:vaultbroker")}, true},
		{"no actor (a service's own tenant token)", nil, false},
		{"exchanged for another service", []claimsOpt{act("svc:connection")}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			token, err := e.signer.mint(tenant, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := anon.Write(ctx, "auth/"+vault.JWTAuthMount+"/login", map[string]any{"role": vault.TenantRolePrefix + tenant, "jwt": token})
			if tc.ok {
				if err != nil || resp.Auth == nil || resp.Auth.ClientToken == "" {
					t.Fatalf("login: %v", err)
				}
				return
			}
			if s := statusOf(err); s != http.StatusBadRequest && s != http.StatusForbidden {
				t.Fatalf("login %s: %v, want 400/403 from vault", tc.name, err)
			}
		})
	}
}
