package launch_test

import (
	"context"
	"errors"
	"testing"

	"github.com/bulkhead/bulkhead/pkg/testenv"
	"github.com/bulkhead/bulkhead/services/vaultbroker/launch"
	"github.com/bulkhead/bulkhead/services/vaultbroker/migrations"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestNamespaceModeRefusedAtStart: configured for namespace mode on a server without
// namespaces (open-source Vault), the broker does not start, and says why; it never falls
// back to mount mode.
func TestNamespaceModeRefusedAtStart(t *testing.T) {
	srv := testenv.Vault(t)
	if caps := testenv.VaultCapabilities(t); caps.Namespaces {
		t.Skipf("server %s has namespaces: refusal cannot happen here", caps.Version)
	}
	db := testenv.NewDatabase(t, testenv.DBSpec{Name: "vaultbroker", Migrations: migrations.FS})
	cfg := launch.DefaultConfig()
	cfg.GRPCAddr = "127.0.0.1:0"
	cfg.DatabaseURL = launch.Secret(db.AppURL)
	cfg.VaultAddr = srv.Addr()
	cfg.ProvisionerToken = launch.Secret(srv.RootToken())
	cfg.VaultMode, cfg.NamespaceParent = "namespace", "bulkhead/tenants"
	// Never reached: the mode check comes first.
	cfg.IdentityAddr, cfg.IdentityJWKSURL, cfg.ClientSecret = "127.0.0.1:1", "http://127.0.0.1:1/.well-known/jwks.json", "unused"
	r, err := launch.Start(context.Background(), cfg, launch.Options{})
	if err == nil {
		_ = r.Close()
		t.Fatal("broker started in namespace mode on a server without namespaces")
	}
	if !errors.Is(err, launch.ErrNamespacesUnsupported) {
		t.Fatalf("err = %v, want ErrNamespacesUnsupported", err)
	}
	t.Logf("refused as expected: %v", err)
}
