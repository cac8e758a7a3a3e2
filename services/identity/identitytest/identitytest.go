// Package identitytest starts a real identity service for tests — identity's own and other
// services' (connection, vault-broker, sync): a fresh migrated PostgreSQL database from
// pkg/testenv, gRPC and HTTP on loopback ports, and platform credentials for the Bulkhead
// services and an operator. Nothing is faked: tokens are signed by identity's key ring and
// verified with pkg/authn exactly as in production.
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
//
//	id := identitytest.Start(t, identitytest.Options{})
//	tenant := id.CreateTenant(t, "acme")
//	ctx := identitytest.WithToken(ctx, id.Token(t, tenant.OwnerKey))
//	svcToken := id.ServiceToken(t, "connection")
package identitytest

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	"github.com/bulkhead/bulkhead/pkg/authz"
	"github.com/bulkhead/bulkhead/pkg/testenv"
	"github.com/bulkhead/bulkhead/services/identity/launch"
	"github.com/bulkhead/bulkhead/services/identity/migrations"
)

// Operator is the client id of the platform operator credential Start configures, holding
// platform.tenants.read and platform.tenants.manage.
const Operator = "operator"

// DefaultServices are the Bulkhead services Start configures platform credentials for, with
// their scopes.
var DefaultServices = map[string][]authz.Permission{
	"connection": {authz.TokensExchange, authz.TenantsStatus, authz.CredentialsRead, authz.CredentialsWrite, authz.EventsRead, authz.TenantsOffboard},
	// identity's own saga issues itself svc:identity tokens without a credential; this entry
	// lets a test call the saga's participants as that same principal directly.
	"identity":    {authz.VaultProvision, authz.TenantsOffboard, authz.TenantsStatus},
	"vaultbroker": {authz.TokensExchange, authz.TenantsStatus, authz.VaultProvision},
	// sync's background runs act as svc:sync within the tenant: GetAccessToken on the
	// connection service needs connections.use; credentials.read as brokertest.Services has it;
	// events.read for its consumer of the connection service's events.
	"sync": {authz.TokensExchange, authz.TenantsStatus, authz.CredentialsRead, authz.ConnectionsUse, authz.EventsRead},
}

// Options configures Start. The zero value is a good default.
type Options struct {
	// Services overrides DefaultServices (service name → scopes).
	Services map[string][]authz.Permission
	// Logger receives identity's logs; nil discards them.
	Logger *slog.Logger
	// Now is the use cases' clock (API key expiry, idempotency records); nil means time.Now.
	// Tokens are always signed with the real time, so they verify.
	Now func() time.Time
	// Configure, if set, may change the configuration before Start uses it.
	Configure func(*launch.Config)
}

// Identity is a running identity service for one test.
type Identity struct {
	*launch.Running
	// DB is identity's database (SuperPool lets a test inspect rows across tenants).
	DB *testenv.Database

	secrets map[string]string // platform client id → secret
	conn    *grpc.ClientConn
	mu      sync.Mutex
}

// Start runs identity until the test ends. The test binary's TestMain must call testenv.Main
// (or RunMain), which stops the shared PostgreSQL server.
func Start(tb testing.TB, opts Options) *Identity {
	tb.Helper()
	services := opts.Services
	if services == nil {
		services = DefaultServices
	}
	db := testenv.NewDatabase(tb, testenv.DBSpec{Name: "identity", Migrations: migrations.FS})
	cfg := launch.DefaultConfig()
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.DatabaseURL = launch.Secret(db.AppURL)
	// A fresh random key-encryption key per test, exactly as an operator would configure one.
	cfg.KeyEncryptionKey = launch.Secret(newKEK(tb))
	cfg.TenantStatusTTL = 200 * time.Millisecond
	// Tests hammer one tenant; the limiter is exercised by pkg/grpcserver's own tests.
	cfg.RateLimit, cfg.RateBurst = 1e6, 1e6

	id := &Identity{DB: db, secrets: map[string]string{}}
	add := func(kind, clientID string, scopes ...authz.Permission) {
		pc, secret, err := launch.NewPlatformCredential(kind, clientID, scopes...)
		if err != nil {
			tb.Fatalf("identitytest: %v", err)
		}
		cfg.PlatformCredentials = append(cfg.PlatformCredentials, pc)
		id.secrets[clientID] = secret
	}
	for _, name := range slices.Sorted(maps.Keys(services)) {
		add(launch.KindService, name, services[name]...)
	}
	add(launch.KindOperator, Operator, authz.PlatformTenantsRead, authz.PlatformTenantsManage)
	if opts.Configure != nil {
		opts.Configure(&cfg)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := launch.Start(ctx, cfg, launch.Options{Logger: opts.Logger, Now: opts.Now})
	if err != nil {
		tb.Fatalf("identitytest: start identity: %v", err)
	}
	id.Running = r
	tb.Cleanup(func() {
		id.mu.Lock()
		if id.conn != nil {
			_ = id.conn.Close()
		}
		id.mu.Unlock()
		if err := r.Close(); err != nil {
			tb.Errorf("identitytest: stop identity: %v", err)
		}
	})
	return id
}

// Conn returns a client connection to identity over loopback TCP, shared by the test and
// closed when it ends.
func (id *Identity) Conn(tb testing.TB) *grpc.ClientConn {
	tb.Helper()
	id.mu.Lock()
	defer id.mu.Unlock()
	if id.conn == nil {
		conn, err := grpc.NewClient(id.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			tb.Fatalf("identitytest: dial: %v", err)
		}
		id.conn = conn
	}
	return id.conn
}

// PlatformSecret returns the secret of a configured platform credential ("" if unknown).
func (id *Identity) PlatformSecret(clientID string) string { return id.secrets[clientID] }

// WithToken returns ctx whose outgoing calls carry token as the bearer credential.
func WithToken(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// WithServiceToken returns ctx whose outgoing calls also carry token as the calling service's
// own credential (x-bulkhead-service-token).
func WithServiceToken(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "x-bulkhead-service-token", token)
}

func callCtx(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

// ServiceToken returns a token for the Bulkhead service clientID (sub svc:<clientID>), for
// audience (default: every Bulkhead service except Vault).
func (id *Identity) ServiceToken(tb testing.TB, clientID string, audience ...string) string {
	tb.Helper()
	secret, ok := id.secrets[clientID]
	if !ok {
		tb.Fatalf("identitytest: no platform credential %q", clientID)
	}
	resp, err := identityv1.NewTokenServiceClient(id.Conn(tb)).IssueToken(callCtx(tb), &identityv1.IssueTokenRequest{
		Credential: &identityv1.IssueTokenRequest_Platform{Platform: &identityv1.PlatformCredential{ClientId: clientID, ClientSecret: secret}},
		Audience:   audience,
	})
	if err != nil {
		tb.Fatalf("identitytest: IssueToken(%s): %v", clientID, err)
	}
	return resp.GetAccessToken()
}

// OperatorToken returns a platform operator's token.
func (id *Identity) OperatorToken(tb testing.TB) string {
	tb.Helper()
	return id.ServiceToken(tb, Operator)
}

// Tenant is a tenant created through CreateTenant.
type Tenant struct {
	ID string
	// OwnerID is the owner's user id; OwnerKey the owner's API key.
	OwnerID  string
	OwnerKey string
}

// CreateTenant onboards a tenant named name, as a client would, with no credentials.
func (id *Identity) CreateTenant(tb testing.TB, name string) Tenant {
	tb.Helper()
	resp, err := identityv1.NewTenantServiceClient(id.Conn(tb)).CreateTenant(callCtx(tb), &identityv1.CreateTenantRequest{
		Name: name, OwnerEmail: "owner@" + sanitize(name) + ".example.com",
	})
	if err != nil {
		tb.Fatalf("identitytest: CreateTenant: %v", err)
	}
	return Tenant{ID: resp.GetTenant().GetTenantId(), OwnerID: resp.GetOwner().GetUserId(), OwnerKey: resp.GetApiKeySecret()}
}

func sanitize(s string) string {
	out := make([]rune, 0, len(s))
	for _, r := range s {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		return "tenant"
	}
	return string(out)
}

// Token exchanges an API key for a token for audience (default: every Bulkhead service except
// Vault).
func (id *Identity) Token(tb testing.TB, apiKey string, audience ...string) string {
	tb.Helper()
	resp, err := identityv1.NewTokenServiceClient(id.Conn(tb)).IssueToken(callCtx(tb), &identityv1.IssueTokenRequest{
		Credential: &identityv1.IssueTokenRequest_ApiKey{ApiKey: apiKey},
		Audience:   audience,
	})
	if err != nil {
		tb.Fatalf("identitytest: IssueToken: %v", err)
	}
	return resp.GetAccessToken()
}

// UserToken returns a token for a member of tenantID, obtained as a Bulkhead service acting for
// the user (ExchangeToken by exchanger, which needs tokens.exchange; "connection" by default).
func (id *Identity) UserToken(tb testing.TB, tenantID, userID string, audience ...string) string {
	tb.Helper()
	if len(audience) == 0 {
		audience = []string{launch.Audience}
	}
	ctx := WithToken(callCtx(tb), id.ServiceToken(tb, "connection", launch.Audience))
	resp, err := identityv1.NewTokenServiceClient(id.Conn(tb)).ExchangeToken(ctx, &identityv1.ExchangeTokenRequest{
		TenantId: tenantID, UserId: userID, Audience: audience,
	})
	if err != nil {
		tb.Fatalf("identitytest: ExchangeToken for user %s: %v", userID, err)
	}
	return resp.GetAccessToken()
}
