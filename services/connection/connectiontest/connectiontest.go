// Package connectiontest starts a real connection service for tests — the service's own and
// other services' (sync, proxy): a real vault-broker with its Vault and identity
// (brokertest), a real OAuth2 provider on loopback (pkg/providertest, ory/fosite), a fresh
// migrated PostgreSQL database, and one or more service instances ("replicas") sharing that
// database. Nothing is faked.
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
//
//	env := connectiontest.Start(t, connectiontest.Options{})
//	tenant := env.NewTenant(t, "acme")                        // created and provisioned in Vault
//	conns := env.Connections(t, 0)                             // a client of instance 0
//	ctx := identitytest.WithToken(ctx, env.Identity.Token(t, tenant.OwnerKey))
//	id := env.Authorize(t, ctx, 0, &connectionv1.StartAuthorizationRequest{…}) // full OAuth2 flow
//
// The catalog is the embedded one plus the test integrations below, pointing at the provider.
package connectiontest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	connectionv1 "github.com/bulkhead/bulkhead/gen/bulkhead/connection/v1"
	"github.com/bulkhead/bulkhead/pkg/providertest"
	"github.com/bulkhead/bulkhead/pkg/testenv"
	"github.com/bulkhead/bulkhead/services/connection/internal/catalog"
	"github.com/bulkhead/bulkhead/services/connection/launch"
	"github.com/bulkhead/bulkhead/services/connection/migrations"
	"github.com/bulkhead/bulkhead/services/identity/identitytest"
	"github.com/bulkhead/bulkhead/services/vaultbroker/brokertest"
)

// Test integrations, all served by the Provider.
const (
	// OAuthOrg and OAuthUser use the authorization code grant with PKCE, rotating refresh
	// tokens and RFC 7009 revocation; their connections are org-level and user-level.
	OAuthOrg  = "test-oauth"
	OAuthUser = "test-oauth-user"
	// APIKey sends an X-Api-Key header; Basic uses HTTP basic auth; ClientCredentials the
	// client credentials grant. All are org-level, with a test endpoint (/api/me).
	APIKey            = "test-apikey"
	Basic             = "test-basic"
	ClientCredentials = "test-cc"
)

// Platform OAuth app of the test integrations, registered at the Provider.
const (
	ClientID     = "bulkhead-platform"
	ClientSecret = "platform-secret"
	// Scope is the provider scope the test integrations request by default; ExtraScope may be
	// allowed by a tenant's settings.
	Scope      = "records.read"
	ExtraScope = "records.write"
)

// Options configures Start. The zero value is a good default.
type Options struct {
	// Broker is the vault-broker to use; nil starts one (with its identity and Vault).
	Broker *brokertest.Broker
	// Provider configures the OAuth2 provider started for the test.
	Provider providertest.Options
	// Logger receives the service's logs; nil discards them.
	Logger *slog.Logger
	// Now is every instance's clock; nil means time.Now.
	Now func() time.Time
	// Configure, if set, may change each instance's configuration.
	Configure func(*launch.Config)
	// Proxy configures each instance's Proxy RPC; the provider's host:port (only it, not
	// its internal server) is always added to AllowHosts.
	Proxy launch.ProxyOptions
	// Offboarding configures each instance's consumer of identity's member.removed events (on
	// by default).
	Offboarding launch.OffboardingOptions
	// Integrations, if set, returns integrations added to the test catalog (TestCatalog) for
	// this environment, e.g. ones whose endpoints point at the provider's internal server.
	Integrations func(*providertest.Provider) []catalog.Provider
	// Worker, if set, configures each instance's background worker. Nil turns it off, so
	// tests that count provider requests see only the ones they cause.
	Worker *launch.WorkerOptions
}

// Env is a running connection service (one or more instances) with everything it needs.
type Env struct {
	Broker   *brokertest.Broker
	Identity *identitytest.Identity
	Provider *providertest.Provider
	DB       *testenv.Database
	Catalog  *launch.Catalog
	// Instances are the running replicas, sharing one database, broker and provider.
	Instances []*launch.Running

	opts      Options
	mu        sync.Mutex
	callbacks []string
	conns     []*grpc.ClientConn
}

// Start runs one instance until the test ends; StartInstance adds replicas.
func Start(tb testing.TB, opts Options) *Env {
	tb.Helper()
	b := opts.Broker
	if b == nil {
		b = brokertest.Start(tb, brokertest.Options{})
	}
	p := providertest.New(tb, opts.Provider)
	cat, err := TestCatalog(p)
	if err != nil {
		tb.Fatalf("connectiontest: catalog: %v", err)
	}
	if opts.Integrations != nil {
		for _, entry := range opts.Integrations(p) {
			if cat, err = cat.With(entry); err != nil {
				tb.Fatalf("connectiontest: catalog: %s: %v", entry.Key, err)
			}
		}
	}
	env := &Env{
		Broker: b, Identity: b.Identity, Provider: p, Catalog: cat, opts: opts,
		DB: testenv.NewDatabase(tb, testenv.DBSpec{Name: "connection", Migrations: migrations.FS}),
	}
	tb.Cleanup(func() {
		env.mu.Lock()
		defer env.mu.Unlock()
		for _, c := range env.conns {
			_ = c.Close()
		}
	})
	env.StartInstance(tb)
	return env
}

// StartInstance starts another replica on the same database and returns its index.
func (e *Env) StartInstance(tb testing.TB) int {
	tb.Helper()
	cfg := launch.DefaultConfig()
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.DatabaseURL = launch.Secret(e.DB.AppURL)
	cfg.MigrateDatabaseURL = launch.Secret(e.DB.OwnerURL)
	cfg.BrokerAddr = e.Broker.GRPCAddr
	cfg.IdentityAddr, cfg.IdentityJWKSURL, cfg.Issuer = e.Identity.GRPCAddr, e.Identity.JWKSURL, e.Identity.Issuer
	cfg.ClientSecret = launch.Secret(e.Identity.PlatformSecret(cfg.ClientID))
	cfg.TenantStatusTTL = 200 * time.Millisecond
	cfg.RateLimit, cfg.RateBurst = 1e6, 1e6
	cfg.ReturnURLPrefixes = []string{"https://app.example.com/"}
	cfg.OAuthApps = map[string]launch.OAuthApp{
		OAuthOrg:  {ClientID: ClientID, ClientSecret: launch.Secret(ClientSecret)},
		OAuthUser: {ClientID: ClientID, ClientSecret: launch.Secret(ClientSecret)},
	}
	if e.opts.Configure != nil {
		e.opts.Configure(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	proxy := e.opts.Proxy
	proxy.AllowHosts = append(slices.Clone(proxy.AllowHosts), strings.TrimPrefix(e.Provider.URL, "http://"))
	work := launch.WorkerOptions{Disabled: true}
	if e.opts.Worker != nil {
		work = *e.opts.Worker
	}
	r, err := launch.Start(ctx, cfg, launch.Options{Logger: e.opts.Logger, Now: e.opts.Now, Catalog: e.Catalog, Proxy: proxy, Offboarding: e.opts.Offboarding, Worker: work})
	if err != nil {
		tb.Fatalf("connectiontest: start connection service: %v", err)
	}
	tb.Cleanup(func() {
		if err := r.Close(); err != nil {
			tb.Errorf("connectiontest: stop connection service: %v", err)
		}
	})
	e.mu.Lock()
	e.Instances = append(e.Instances, r)
	e.callbacks = append(e.callbacks, r.CallbackURL)
	callbacks := slices.Clone(e.callbacks)
	i := len(e.Instances) - 1
	e.mu.Unlock()
	// The platform app accepts every instance's redirect URI.
	if err := e.Provider.RegisterClient(ClientID, ClientSecret, callbacks, []string{Scope, ExtraScope}); err != nil {
		tb.Fatalf("connectiontest: register client: %v", err)
	}
	return i
}

// TestCatalog is the embedded catalog plus the test integrations served by p.
func TestCatalog(p *providertest.Provider) (*launch.Catalog, error) {
	c, err := catalog.Parse(catalog.Embedded(), catalog.AllowLoopback())
	if err != nil {
		return nil, err
	}
	api := catalog.API{
		BaseURLs:     []string{p.URL + "/api"},
		TestEndpoint: &catalog.TestEndpoint{Method: http.MethodGet, Path: "/me", ExpectedStatus: http.StatusOK},
	}
	oauth := func(key string, scope catalog.ConnectionScope) catalog.Provider {
		return catalog.Provider{
			Key: key, DisplayName: "Test OAuth (" + string(scope) + ")", AuthType: catalog.AuthOAuth2AuthorizationCode,
			DefaultConnectionScope: scope,
			OAuth2: &catalog.OAuth2{
				AuthorizationURL: p.AuthURL(), TokenURL: p.TokenURL(), RevocationURL: p.RevocationURL(),
				RevocationStyle: catalog.RevocationRFC7009, TokenAuthMethod: catalog.TokenAuthBasic,
				DefaultScopes: []string{Scope}, RefreshTokenRotation: true, AccessTokenExpires: true,
			},
			API: api,
		}
	}
	entries := []catalog.Provider{
		oauth(OAuthOrg, catalog.ScopeOrg),
		oauth(OAuthUser, catalog.ScopeUser),
		{
			Key: APIKey, DisplayName: "Test API key", AuthType: catalog.AuthAPIKey, DefaultConnectionScope: catalog.ScopeOrg,
			APIKey: &catalog.APIKey{In: catalog.APIKeyInHeader, Name: "X-Api-Key"}, API: api,
		},
		{
			Key: Basic, DisplayName: "Test basic", AuthType: catalog.AuthBasic, DefaultConnectionScope: catalog.ScopeOrg, API: api,
		},
		{
			Key: ClientCredentials, DisplayName: "Test client credentials", AuthType: catalog.AuthOAuth2ClientCredentials,
			DefaultConnectionScope: catalog.ScopeOrg,
			OAuth2: &catalog.OAuth2{
				TokenURL: p.TokenURL(), TokenAuthMethod: catalog.TokenAuthBasic, DefaultScopes: []string{Scope}, AccessTokenExpires: true,
			},
			API: api,
		},
	}
	for _, entry := range entries {
		if c, err = c.With(entry); err != nil {
			return nil, fmt.Errorf("%s: %w", entry.Key, err)
		}
	}
	return c, nil
}

// Tenant is a tenant created by NewTenant.
type Tenant = identitytest.Tenant

// NewTenant creates a tenant on identity and provisions its Vault layout through the broker.
func (e *Env) NewTenant(tb testing.TB, name string) Tenant {
	tb.Helper()
	t := e.Identity.CreateTenant(tb, name)
	e.Broker.Provision(tb, t.ID)
	return t
}

// conn returns a client connection to instance i, closed when the test ends.
func (e *Env) conn(tb testing.TB, i int) *grpc.ClientConn {
	tb.Helper()
	c, err := grpc.NewClient(e.Instances[i].GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatalf("connectiontest: dial: %v", err)
	}
	e.mu.Lock()
	e.conns = append(e.conns, c)
	e.mu.Unlock()
	return c
}

// Connections returns a ConnectionService client of instance i. Calls carry whatever
// credentials their context has (identitytest.WithToken, WithServiceToken).
func (e *Env) Connections(tb testing.TB, i int) connectionv1.ConnectionServiceClient {
	tb.Helper()
	return connectionv1.NewConnectionServiceClient(e.conn(tb, i))
}

// Integrations returns an IntegrationService client of instance i.
func (e *Env) Integrations(tb testing.TB, i int) connectionv1.IntegrationServiceClient {
	tb.Helper()
	return connectionv1.NewIntegrationServiceClient(e.conn(tb, i))
}

// Events returns an EventService client of instance i (the outbox across tenants, for
// Bulkhead services holding events.read).
func (e *Env) Events(tb testing.TB, i int) connectionv1.EventServiceClient {
	tb.Helper()
	return connectionv1.NewEventServiceClient(e.conn(tb, i))
}

// Offboarding returns a TenantOffboardingService client of instance i (identity's
// tenant-deletion saga; call it with identity's own token, identitytest's ServiceToken of
// "identity").
func (e *Env) Offboarding(tb testing.TB, i int) connectionv1.TenantOffboardingServiceClient {
	tb.Helper()
	return connectionv1.NewTenantOffboardingServiceClient(e.conn(tb, i))
}

// ReturnURL is an allowed return URL of every instance.
const ReturnURL = "https://app.example.com/connected"

// Authorize runs a whole OAuth2 authorization as a browser would: StartAuthorization on
// instance i with ctx's credentials, the provider's approval, and the callback. It returns the
// connection id the callback reported. An empty req.ReturnUrl is set to ReturnURL, where the
// callback reports the connection id.
func (e *Env) Authorize(tb testing.TB, ctx context.Context, i int, req *connectionv1.StartAuthorizationRequest) string {
	tb.Helper()
	if req.GetReturnUrl() == "" {
		req.ReturnUrl = ReturnURL
	}
	start, err := e.Connections(tb, i).StartAuthorization(ctx, req)
	if err != nil {
		tb.Fatalf("connectiontest: StartAuthorization: %v", err)
	}
	resp, err := e.FollowAuthorization(ctx, start.GetAuthorizationUrl())
	if err != nil {
		tb.Fatalf("connectiontest: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		body, _ := io.ReadAll(resp.Body)
		tb.Fatalf("connectiontest: callback answered %d: %s", resp.StatusCode, body)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Query().Get("connection_id") == "" {
		tb.Fatalf("connectiontest: callback redirected to %q", resp.Header.Get("Location"))
	}
	return loc.Query().Get("connection_id")
}

// FollowAuthorization approves authURL at the provider and calls the callback it redirects
// to, without following the callback's own redirect.
func (e *Env) FollowAuthorization(ctx context.Context, authURL string) (*http.Response, error) {
	back, err := e.Provider.Approve(ctx, authURL)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, back.String(), nil)
	if err != nil {
		return nil, err
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return client.Do(req)
}
