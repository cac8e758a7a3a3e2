package vault_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulkhead/bulkhead/services/vaultbroker/internal/vault"
	"github.com/google/uuid"
	vaultapi "github.com/hashicorp/vault-client-go"
)

// TestNamespaceModeRefusedWithoutNamespaces runs on every server: on one without namespaces,
// Verify in namespace mode must refuse (no fallback) with ErrNamespacesUnsupported; on one with
// namespaces it must succeed.
func TestNamespaceModeRefusedWithoutNamespaces(t *testing.T) {
	e := testEnv(t)
	ctx := context.Background()
	cfg := e.cfg
	cfg.Mode = vault.ModeNamespace
	cfg.NamespaceParent = "bulkhead-test-" + uuid.NewString()[:8]
	for _, who := range []struct{ name, token string }{{"root token", e.srv.RootToken()}, {"provisioner token", e.provToken}} {
		t.Run(who.name, func(t *testing.T) {
			v, err := vault.Verify(ctx, cfg, who.token)
			if e.caps.Namespaces {
				t.Skipf("server %s has namespaces (%s); refusal cannot happen here", e.caps.Version, e.caps.Reason)
			}
			if !errors.Is(err, vault.ErrNamespacesUnsupported) || v != nil {
				t.Fatalf("Verify(namespace mode) on %s = %v, %v; want ErrNamespacesUnsupported", e.caps.Version, v, err)
			}
			t.Logf("refused as expected: %v", err)
		})
	}
	// A Verified for mount mode cannot be used to build a namespace-mode broker or provisioner.
	if _, err := vault.NewBroker(cfg, e.verified, e.signer.source()); err == nil {
		t.Fatal("NewBroker in namespace mode accepted a mount-mode verification")
	}
	if _, err := vault.NewProvisioner(cfg, e.verified, e.provToken); err == nil {
		t.Fatal("NewProvisioner in namespace mode accepted a mount-mode verification")
	}
}

// TestCanaryDetectsIgnoredNamespaceHeader shows why the canary exists: on a server without
// namespaces, a policy written "in" namespace A is readable "from" namespace B because both
// requests land in the root namespace. The canary check must call that out.
func TestCanaryDetectsIgnoredNamespaceHeader(t *testing.T) {
	e := testEnv(t)
	if e.caps.Namespaces {
		t.Skipf("server %s has namespaces (%s): the header is honoured here", e.caps.Version, e.caps.Reason)
	}
	suffix := uuid.NewString()[:8]
	err := vault.CanaryIsolationForTest(context.Background(), e.root, "bulkhead-a-"+suffix, "bulkhead-b-"+suffix)
	if err == nil || !strings.Contains(err.Error(), "does not isolate namespaces") {
		t.Fatalf("canary on a server ignoring X-Vault-Namespace: %v, want an isolation failure", err)
	}
	// The canary cleaned up after itself (in the root namespace, where it really went).
	if _, err := e.root.Read(context.Background(), "sys/policies/acl/bulkhead-canary"); statusOf(err) != http.StatusNotFound {
		t.Fatalf("canary policy left behind: %v", err)
	}
}

// TestNamespaceMode runs the namespace layout end to end when the server supports namespaces
// (Vault Enterprise, HCP Vault, OpenBao ≥ 2.3 via VAULT_ADDR/VAULT_TOKEN).
func TestNamespaceMode(t *testing.T) {
	e := testEnv(t)
	if !e.caps.Namespaces {
		t.Skipf("namespace-mode tests not run: %s (vault mode: mount ran instead; point VAULT_ADDR/VAULT_TOKEN at Vault Enterprise, HCP Vault or OpenBao ≥ 2.3 to run them)", e.caps.Reason)
	}
	t.Log("vault mode: namespace")
	ctx := context.Background()
	cfg := e.cfg
	cfg.Mode = vault.ModeNamespace
	cfg.NamespaceParent = "bulkhead-test-" + uuid.NewString()[:8] + "/tenants"
	if _, err := vault.Bootstrap(ctx, cfg, e.srv.RootToken()); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	t.Cleanup(func() {
		top := strings.Split(cfg.NamespaceParent, "/")[0]
		_, _ = e.root.Delete(context.Background(), "sys/namespaces/tenants", vaultapi.WithNamespace(top))
		_, _ = e.root.Delete(context.Background(), "sys/namespaces/"+top)
	})
	hcl, err := os.ReadFile(filepath.Join(e.repoRoot, "deploy", "vault", "provisioner-namespace.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	// The provisioner's token lives in the parent namespace with only the shipped policy.
	if _, err := e.root.Write(ctx, "sys/policies/acl/bulkhead-provisioner-file", map[string]any{"policy": string(hcl)}, vaultapi.WithNamespace(cfg.NamespaceParent)); err != nil {
		t.Fatal(err)
	}
	tok, err := e.root.Write(ctx, "auth/token/create", map[string]any{"policies": []string{"bulkhead-provisioner-file"}, "no_default_policy": true, "ttl": "1h"}, vaultapi.WithNamespace(cfg.NamespaceParent))
	if err != nil {
		t.Fatal(err)
	}
	provToken := tok.Auth.ClientToken
	verified, err := vault.Verify(ctx, cfg, provToken)
	if err != nil {
		t.Fatalf("verify namespace mode: %v", err)
	}
	prov, err := vault.NewProvisioner(cfg, verified, provToken)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prov.Close)
	tenantA, tenantB := uuid.NewString(), uuid.NewString()
	for _, tenant := range []string{tenantA, tenantB} {
		if _, err := prov.Provision(ctx, tenant); err != nil {
			t.Fatalf("provision %s: %v", tenant, err)
		}
		res, err := prov.Provision(ctx, tenant)
		if err != nil || len(res.Changes) != 0 {
			t.Fatalf("second provision: %v, %v; want no changes", res.Changes, err)
		}
	}
	b, err := vault.NewBroker(cfg, verified, e.signer.source())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	cred := seed(t, b, tenantA, tenantB)
	get(t, b, tenantA, cred)
	tokenA, err := vault.TenantTokenForTest(ctx, b, tenantA)
	if err != nil {
		t.Fatal(err)
	}
	asA := e.rawClient(t, tokenA)
	nsB := cfg.NamespaceParent + "/" + tenantB
	if _, err := asA.Read(ctx, vault.KVMountPrefix+"/data/"+cred, vaultapi.WithNamespace(nsB)); statusOf(err) != http.StatusForbidden {
		t.Fatalf("A's token in B's namespace: %v, want 403", err)
	}
	if _, err := asA.Write(ctx, vault.TransitMount+"/encrypt/tenant", map[string]any{"plaintext": "aGk="}, vaultapi.WithNamespace(nsB)); statusOf(err) != http.StatusForbidden {
		t.Fatalf("A's token on B's key: %v, want 403", err)
	}
	for _, tenant := range []string{tenantA, tenantB} {
		if _, err := prov.Deprovision(ctx, tenant); err != nil {
			t.Fatalf("deprovision %s: %v", tenant, err)
		}
	}
	b.Forget(tenantA)
	if _, err := b.GetCredential(ctx, tenantA, cred, 0); !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("get after deprovision: %v, want ErrNotFound", err)
	}
}
