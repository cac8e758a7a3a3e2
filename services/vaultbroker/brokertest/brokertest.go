// Package brokertest starts a real vault-broker for tests — the broker's own and other
// services' (connection, sync): a real identity (identitytest), a real Vault bootstrapped for
// it, a fresh migrated PostgreSQL database for the audit log, and the broker's gRPC server on a
// loopback port. Nothing is faked.
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
//
//	b := brokertest.Start(t, brokertest.Options{})
//	tenant := b.Identity.CreateTenant(t, "acme")
//	client := b.Client(t, "connection")                     // calls carry svc:connection's token
//	ctx := grpcclient.ActAs(ctx, tenant.ID, b.Identity.Token(t, tenant.OwnerKey))
//	b.Provision(t, tenant.ID)
//	_, err := client.PutCredential(ctx, &brokerv1.PutCredentialRequest{…})
//
// Vault: in mount mode the JWT auth trusting identity is configured once per Vault cluster, so
// each Broker gets a private dev Vault (≈1–3 s to start). When the shared test Vault
// (testenv.Vault, e.g. VAULT_ADDR pointing at Vault Enterprise or OpenBao) proves namespaces,
// the broker runs in namespace mode on it instead, under a parent namespace of its own.
package brokertest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	vaultapi "github.com/hashicorp/vault-client-go"
	"google.golang.org/grpc"

	brokerv1 "github.com/bulkhead/bulkhead/gen/bulkhead/vaultbroker/v1"
	"github.com/bulkhead/bulkhead/pkg/authz"
	"github.com/bulkhead/bulkhead/pkg/grpcclient"
	"github.com/bulkhead/bulkhead/pkg/testenv"
	"github.com/bulkhead/bulkhead/pkg/vaultlocal"
	"github.com/bulkhead/bulkhead/services/identity/identitytest"
	"github.com/bulkhead/bulkhead/services/vaultbroker/internal/vault"
	"github.com/bulkhead/bulkhead/services/vaultbroker/launch"
	"github.com/bulkhead/bulkhead/services/vaultbroker/migrations"
)

// ClientID is the broker's platform client id on identity.
const ClientID = "vaultbroker"

// ProvisioningService is the client id of the platform service Start configures to provision
// tenants (scope vault.provision), standing in for identity's tenant onboarding.
const ProvisioningService = "provisioner"

// Services are the platform credentials Start configures on identity: the broker itself
// (tokens.exchange for Vault JWTs, tenants.status for the kill switch), its callers, and the
// provisioning service. tokens.exchange on the provisioner only lets tests obtain a
// tenant-scoped token for it.
var Services = map[string][]authz.Permission{
	ClientID:     {authz.TokensExchange, authz.TenantsStatus},
	"connection": {authz.TokensExchange, authz.TenantsStatus, authz.CredentialsRead, authz.CredentialsWrite, authz.EventsRead, authz.TenantsOffboard},
	// identity's saga calls the broker and the connection service as svc:identity; this
	// credential lets a test do the same directly.
	"identity":          {authz.VaultProvision, authz.TenantsOffboard, authz.TenantsStatus},
	"sync":              {authz.TokensExchange, authz.TenantsStatus, authz.CredentialsRead},
	ProvisioningService: {authz.VaultProvision, authz.TokensExchange},
}

// Options configures Start. The zero value is a good default.
type Options struct {
	// Identity is the identity service to use; nil starts one with Services.
	Identity *identitytest.Identity
	// Logger receives the broker's logs; nil discards them.
	Logger *slog.Logger
	// Configure, if set, may change the broker's configuration before Start uses it.
	Configure func(*launch.Config)
}

// Broker is a running vault-broker for one test.
type Broker struct {
	*launch.Running
	Identity *identitytest.Identity
	// Vault is the server the broker uses (private in mount mode); RootToken administers it.
	Vault *vaultlocal.Server
	// DB is the broker's database (audit_events).
	DB *testenv.Database
	// Config is the configuration the broker was started with.
	Config launch.Config

	mu    sync.Mutex
	conns []*grpc.ClientConn
}

var printMode sync.Map // mode → printed once per test binary

// Start runs a broker until the test ends.
func Start(tb testing.TB, opts Options) *Broker {
	tb.Helper()
	id := opts.Identity
	if id == nil {
		id = identitytest.Start(tb, identitytest.Options{Services: Services})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // may build Vault once
	defer cancel()

	cfg := launch.DefaultConfig()
	cfg.GRPCAddr = "127.0.0.1:0"
	cfg.IdentityAddr = id.GRPCAddr
	cfg.IdentityJWKSURL = id.JWKSURL
	cfg.Issuer = id.Issuer
	cfg.ClientID = ClientID
	cfg.ClientSecret = launch.Secret(id.PlatformSecret(ClientID))
	if cfg.ClientSecret == "" {
		tb.Fatalf("brokertest: identity has no platform credential %q (start it with brokertest.Services)", ClientID)
	}
	cfg.TenantStatusTTL = 200 * time.Millisecond
	cfg.RateLimit, cfg.RateBurst = 1e6, 1e6

	srv, mode, parent := vaultFor(tb, ctx)
	cfg.VaultAddr, cfg.VaultMode, cfg.NamespaceParent = srv.Addr(), string(mode), parent
	cfg.ProvisionerToken = launch.Secret(bootstrap(tb, ctx, srv, mode, parent, id))

	db := testenv.NewDatabase(tb, testenv.DBSpec{Name: "vaultbroker", Migrations: migrations.FS})
	cfg.DatabaseURL = launch.Secret(db.AppURL)
	// Migrating at start-up (a no-op on the migrated clone) also narrows the app role's
	// privileges on the audit table, exactly as in production.
	cfg.MigrateDatabaseURL = launch.Secret(db.OwnerURL)
	if opts.Configure != nil {
		opts.Configure(&cfg)
	}
	// Not ctx: the broker stops when the context given to Start ends, and it must run until
	// the test ends. Start-up steps are bounded by their own timeouts.
	r, err := launch.Start(context.Background(), cfg, launch.Options{Logger: opts.Logger})
	if err != nil {
		tb.Fatalf("brokertest: start vault-broker: %v", err)
	}
	b := &Broker{Running: r, Identity: id, Vault: srv, DB: db, Config: cfg}
	tb.Cleanup(func() {
		b.mu.Lock()
		for _, c := range b.conns {
			_ = c.Close()
		}
		b.mu.Unlock()
		if err := r.Close(); err != nil {
			tb.Errorf("brokertest: stop vault-broker: %v", err)
		}
	})
	tb.Logf("vault mode: %s", r.Mode)
	if _, done := printMode.LoadOrStore(r.Mode, true); !done {
		fmt.Printf("vault mode: %s\n", r.Mode)
	}
	return b
}

// vaultFor picks the Vault server: the shared one in namespace mode when it proves namespaces
// (tenant namespaces each trust identity on their own, so brokers can share it), else a
// private dev server in mount mode.
func vaultFor(tb testing.TB, ctx context.Context) (*vaultlocal.Server, vault.Mode, string) {
	tb.Helper()
	shared := testenv.Vault(tb)
	if caps := testenv.VaultCapabilities(tb); caps.Namespaces {
		return shared, vault.ModeNamespace, "bulkhead-test-" + uuid.NewString()[:8] + "/tenants"
	}
	srv, err := vaultlocal.Start(ctx, vaultlocal.Options{IgnoreEnv: true, Logger: quiet()})
	if err != nil {
		tb.Fatalf("brokertest: private vault: %v", err)
	}
	tb.Cleanup(func() { _ = srv.Stop() })
	return srv, vault.ModeMount, ""
}

func quiet() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// bootstrap prepares srv as an operator would — vault.Bootstrap with the root token (JWT auth
// trusting identity's JWKS) — and returns a provisioner token carrying only the policy file we
// ship in deploy/vault/.
func bootstrap(tb testing.TB, ctx context.Context, srv *vaultlocal.Server, mode vault.Mode, parent string, id *identitytest.Identity) string {
	tb.Helper()
	cfg := vault.Config{
		Addr: srv.Addr(), Mode: mode, NamespaceParent: parent,
		Trust: vault.JWTTrust{JWKSURL: id.JWKSURL, BoundIssuer: id.Issuer},
	}
	if _, err := vault.Bootstrap(ctx, cfg, srv.RootToken()); err != nil {
		tb.Fatalf("brokertest: vault bootstrap: %v", err)
	}
	root, err := vaultapi.New(vaultapi.WithAddress(srv.Addr()), vaultapi.WithRequestTimeout(30*time.Second))
	if err != nil {
		tb.Fatal(err)
	}
	defer root.Configuration().HTTPClient.CloseIdleConnections()
	if err := root.SetToken(srv.RootToken()); err != nil {
		tb.Fatal(err)
	}
	repo, err := vaultlocal.RepoRoot()
	if err != nil {
		tb.Fatal(err)
	}
	file, opts := "provisioner.hcl", []vaultapi.RequestOption(nil)
	if mode == vault.ModeNamespace {
		file, opts = "provisioner-namespace.hcl", []vaultapi.RequestOption{vaultapi.WithNamespace(parent)}
		tb.Cleanup(func() {
			top, rest, _ := strings.Cut(parent, "/")
			_, _ = root.Delete(context.Background(), "sys/namespaces/"+rest, vaultapi.WithNamespace(top))
			_, _ = root.Delete(context.Background(), "sys/namespaces/"+top)
		})
	}
	hcl, err := os.ReadFile(filepath.Join(repo, "deploy", "vault", file))
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := root.Write(ctx, "sys/policies/acl/bulkhead-provisioner-file", map[string]any{"policy": string(hcl)}, opts...); err != nil {
		tb.Fatalf("brokertest: provisioner policy: %v", err)
	}
	tok, err := root.Write(ctx, "auth/token/create", map[string]any{
		"policies": []string{"bulkhead-provisioner-file"}, "no_default_policy": true, "ttl": "2h",
	}, opts...)
	if err != nil {
		tb.Fatalf("brokertest: provisioner token: %v", err)
	}
	return tok.Auth.ClientToken
}

// Client returns a BrokerService client whose calls carry the platform service's own token
// (x-bulkhead-service-token) and the principal of the call's context, as the service would
// send them (pkg/grpcclient): the incoming claims, or grpcclient.ActAs. With service "" no
// service token is sent (an end user calling directly). The connection is closed when the
// test ends.
func (b *Broker) Client(tb testing.TB, service string) brokerv1.BrokerServiceClient {
	tb.Helper()
	opts := grpcclient.Options{NoTenantMethods: []string{
		brokerv1.BrokerService_ProvisionTenant_FullMethodName,
		brokerv1.BrokerService_DeprovisionTenant_FullMethodName,
	}}
	if service != "" {
		tok := b.Identity.ServiceToken(tb, service)
		opts.ServiceToken = grpcclient.TokenSourceFunc(func(context.Context) (string, error) { return tok, nil })
	}
	conn, err := grpcclient.Dial(b.GRPCAddr, opts)
	if err != nil {
		tb.Fatalf("brokertest: dial: %v", err)
	}
	b.mu.Lock()
	b.conns = append(b.conns, conn)
	b.mu.Unlock()
	return brokerv1.NewBrokerServiceClient(conn)
}

// Provision provisions tenantID as the provisioning service and fails the test on error.
func (b *Broker) Provision(tb testing.TB, tenantID string) *brokerv1.ProvisionTenantResponse {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := b.Client(tb, ProvisioningService).ProvisionTenant(ctx, &brokerv1.ProvisionTenantRequest{TenantId: tenantID})
	if err != nil {
		tb.Fatalf("brokertest: provision %s: %v", tenantID, err)
	}
	return resp
}
