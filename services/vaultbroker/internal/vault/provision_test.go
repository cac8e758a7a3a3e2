package vault_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"testing"

	"github.com/bulkhead/bulkhead/services/vaultbroker/internal/vault"
	"github.com/google/uuid"
)

// TestVaultMode says which mode this run exercises; namespace-mode tests run only when the
// server proves it has namespaces.
func TestVaultMode(t *testing.T) {
	e := testEnv(t)
	mode := vault.ModeMount
	if e.caps.Namespaces {
		mode = vault.ModeNamespace
	}
	t.Logf("vault mode: %s (server %s, enterprise=%v; %s)", mode, e.caps.Version, e.caps.Enterprise, e.caps.Reason)
	if e.verified.Mode() != vault.ModeMount {
		t.Fatalf("shared env verified mode %q, want mount", e.verified.Mode())
	}
}

var allSteps = []string{"kv mount", "kv config", "transit key", "policy", "jwt role"}

// TestProvisionIdempotent runs with the provisioner's token (only the shipped policy, not
// root): a first Provision builds every piece, a second changes nothing, and after a partial
// failure (simulated by removing or altering pieces with the root token) Provision rebuilds
// exactly what is missing.
func TestProvisionIdempotent(t *testing.T) {
	e := testEnv(t)
	ctx := context.Background()
	tenant := uuid.NewString()
	t.Cleanup(func() { _, _ = e.prov.Deprovision(context.Background(), tenant) })

	res, err := e.prov.Provision(ctx, tenant)
	if err != nil {
		t.Fatalf("first provision: %v", err)
	}
	if !slices.Equal(res.Changes, allSteps) {
		t.Fatalf("first provision changed %v, want %v", res.Changes, allSteps)
	}

	// A credential written between the two runs must survive the second run untouched.
	b := e.broker(t, nil)
	cred := uuid.NewString()
	if _, err := b.PutCredential(ctx, tenant, cred, map[string]string{"token": "s3cret"}, 0); err != nil {
		t.Fatalf("put: %v", err)
	}

	kv := vault.KVMountPrefix + "/" + tenant
	tests := []struct {
		name   string
		damage func(t *testing.T)
		want   []string
	}{
		{"already provisioned", func(*testing.T) {}, nil},
		{"role missing", func(t *testing.T) {
			mustDo(t, func() error {
				_, err := e.root.Delete(ctx, "auth/"+vault.JWTAuthMount+"/role/"+vault.TenantRolePrefix+tenant)
				return err
			})
		}, []string{"jwt role"}},
		{"policy altered", func(t *testing.T) {
			mustDo(t, func() error {
				_, err := e.root.Write(ctx, "sys/policies/acl/"+vault.TenantPolicyPrefix+tenant, map[string]any{"policy": `path "sys/*" { capabilities = ["read"] }`})
				return err
			})
		}, []string{"policy"}},
		{"role widened", func(t *testing.T) {
			mustDo(t, func() error {
				path := "auth/" + vault.JWTAuthMount + "/role/" + vault.TenantRolePrefix + tenant
				role, err := e.root.Read(ctx, path)
				if err != nil {
					return err
				}
				role.Data["token_policies"] = []string{vault.TenantPolicyPrefix + tenant, "default"}
				_, err = e.root.Write(ctx, path, role.Data)
				return err
			})
		}, []string{"jwt role"}},
		{"cas not required", func(t *testing.T) {
			mustDo(t, func() error {
				_, err := e.root.Write(ctx, kv+"/config", map[string]any{"cas_required": false})
				return err
			})
		}, []string{"kv config"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.damage(t)
			res, err := e.prov.Provision(ctx, tenant)
			if err != nil {
				t.Fatalf("provision: %v", err)
			}
			if !slices.Equal(res.Changes, tc.want) {
				t.Fatalf("provision changed %v, want %v", res.Changes, tc.want)
			}
			b.Forget(tenant)
			got, err := b.GetCredential(ctx, tenant, cred, 0)
			if err != nil || got.Data["token"] != "s3cret" {
				t.Fatalf("credential after re-provision: %+v, %v", got, err)
			}
		})
	}
}

// TestProvisionerCannotReachSecrets uses the provisioner's own token against a tenant's data,
// key, trust configuration and role grants: Vault must refuse every one.
func TestProvisionerCannotReachSecrets(t *testing.T) {
	e := testEnv(t)
	ctx := context.Background()
	tenant := e.tenant(t)
	b := e.broker(t, nil)
	cred := uuid.NewString()
	if _, err := b.PutCredential(ctx, tenant, cred, map[string]string{"k": "v"}, 0); err != nil {
		t.Fatal(err)
	}
	ct, _, err := b.Encrypt(ctx, tenant, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	prov := e.rawClient(t, e.provToken)
	kv := vault.KVMountPrefix + "/" + tenant
	tests := []struct {
		name string
		call func() error
	}{
		{"read credential", func() error { _, err := prov.Read(ctx, kv+"/data/"+cred); return err }},
		{"read metadata", func() error { _, err := prov.Read(ctx, kv+"/metadata/"+cred); return err }},
		{"list credentials", func() error { _, err := prov.List(ctx, kv+"/metadata/"); return err }},
		{"encrypt", func() error {
			_, err := prov.Write(ctx, vault.TransitMount+"/encrypt/"+tenant, map[string]any{"plaintext": "aGk="})
			return err
		}},
		{"decrypt", func() error {
			_, err := prov.Write(ctx, vault.TransitMount+"/decrypt/"+tenant, map[string]any{"ciphertext": ct})
			return err
		}},
		{"export key", func() error {
			_, err := prov.Read(ctx, vault.TransitMount+"/export/encryption-key/"+tenant)
			return err
		}},
		{"change jwt trust", func() error {
			_, err := prov.Write(ctx, "auth/"+vault.JWTAuthMount+"/config", map[string]any{"jwt_validation_pubkeys": []string{e.signer.pubPEM}})
			return err
		}},
		{"role granting root", func() error {
			_, err := prov.Write(ctx, "auth/"+vault.JWTAuthMount+"/role/"+vault.TenantRolePrefix+tenant, map[string]any{
				"role_type": "jwt", "user_claim": "tid", "bound_audiences": []string{"x"}, "token_policies": []string{"root"},
			})
			return err
		}},
		{"role via legacy policies field", func() error {
			_, err := prov.Write(ctx, "auth/"+vault.JWTAuthMount+"/role/"+vault.TenantRolePrefix+tenant, map[string]any{
				"role_type": "jwt", "user_claim": "tid", "bound_audiences": []string{"x"}, "policies": []string{"bulkhead-provisioner-file"},
			})
			return err
		}},
		{"mount outside bulkhead-kv", func() error {
			_, err := prov.Write(ctx, "sys/mounts/elsewhere-"+tenant, map[string]any{"type": "kv"})
			return err
		}},
		{"token for itself", func() error {
			_, err := prov.Write(ctx, "auth/token/create", map[string]any{"policies": []string{vault.TenantPolicyPrefix + tenant}})
			return err
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); statusOf(err) != http.StatusForbidden {
				t.Fatalf("got %v, want 403 from vault", err)
			}
		})
	}
}

func TestProvisionRejectsBadTenantID(t *testing.T) {
	e := testEnv(t)
	for _, id := range []string{"", "not-a-uuid", "../" + uuid.NewString(), "6BA7B810-9DAD-11D1-80B4-00C04FD430C8", uuid.Nil.String()} {
		if _, err := e.prov.Provision(context.Background(), id); !errors.Is(err, vault.ErrInvalidArgument) {
			t.Errorf("Provision(%q) = %v, want ErrInvalidArgument", id, err)
		}
	}
}

// TestDeprovisionShreds: after Deprovision the tenant's credentials are gone even for the root
// token, its ciphertexts cannot be decrypted by anyone, cached tokens stop working at once, and
// a second Deprovision is a no-op.
func TestDeprovisionShreds(t *testing.T) {
	e := testEnv(t)
	ctx := context.Background()
	tenant := uuid.NewString()
	if _, err := e.prov.Provision(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	b := e.broker(t, nil)
	cred := uuid.NewString()
	if _, err := b.PutCredential(ctx, tenant, cred, map[string]string{"refresh_token": "r1"}, 0); err != nil {
		t.Fatal(err)
	}
	ct, _, err := b.Encrypt(ctx, tenant, []byte("card number"))
	if err != nil {
		t.Fatal(err)
	}
	token, err := vault.TenantTokenForTest(ctx, b, tenant)
	if err != nil {
		t.Fatal(err)
	}

	res, err := e.prov.Deprovision(ctx, tenant)
	if err != nil {
		t.Fatalf("deprovision: %v", err)
	}
	if want := []string{"jwt role", "policy", "transit key", "kv mount"}; !slices.Equal(res.Changes, want) {
		t.Fatalf("deprovision changed %v, want %v", res.Changes, want)
	}
	if res, err := e.prov.Deprovision(ctx, tenant); err != nil || len(res.Changes) != 0 {
		t.Fatalf("second deprovision: %v, %v; want no changes", res.Changes, err)
	}

	// The broker's cached token is still unexpired but its policy is gone: Vault refuses it, the
	// broker drops it, and logging in again finds no role.
	if _, err := b.GetCredential(ctx, tenant, cred, 0); !errors.Is(err, vault.ErrTenantNotProvisioned) {
		t.Fatalf("get after deprovision: %v, want ErrTenantNotProvisioned", err)
	}
	if _, err := b.Decrypt(ctx, tenant, ct); !errors.Is(err, vault.ErrTenantNotProvisioned) {
		t.Fatalf("decrypt after deprovision: %v, want ErrTenantNotProvisioned", err)
	}
	direct := e.rawClient(t, token)
	if _, err := direct.Read(ctx, vault.KVMountPrefix+"/"+tenant+"/data/"+cred); statusOf(err) != http.StatusForbidden {
		t.Fatalf("old tenant token after deprovision: %v, want 403", err)
	}
	// Even root finds nothing: the mount and the key are destroyed, not just hidden.
	if _, err := e.root.Read(ctx, vault.KVMountPrefix+"/"+tenant+"/data/"+cred); err == nil {
		t.Fatal("root can still read the shredded credential")
	}
	if _, err := e.root.Write(ctx, vault.TransitMount+"/decrypt/"+tenant, map[string]any{"ciphertext": ct}); err == nil {
		t.Fatal("root can still decrypt with the shredded key")
	}

	// Re-provisioning the same tenant id starts empty and with a new key.
	if _, err := e.prov.Provision(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = e.prov.Deprovision(context.Background(), tenant) })
	if _, err := b.GetCredential(ctx, tenant, cred, 0); !errors.Is(err, vault.ErrNotFound) || errors.Is(err, vault.ErrTenantNotProvisioned) {
		t.Fatalf("get after re-provision: %v, want ErrNotFound", err)
	}
	if _, err := b.Decrypt(ctx, tenant, ct); !errors.Is(err, vault.ErrInvalidArgument) {
		t.Fatalf("decrypt old ciphertext with the new key: %v, want ErrInvalidArgument", err)
	}
}

func mustDo(t *testing.T, fn func() error) {
	t.Helper()
	if err := fn(); err != nil {
		t.Fatal(err)
	}
}
