// Package launch builds and runs the connection service in-process: the gRPC server with
// Bulkhead's interceptor chain, and the HTTP listener for the OAuth2 callback and /healthz.
// cmd/connection runs it from environment configuration; tests (the service's own, and other
// services' through package connectiontest) start it the same way, on 127.0.0.1:0 addresses.
package launch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/bulkhead/bulkhead/pkg/authn"
	"github.com/bulkhead/bulkhead/pkg/grpcclient"
	"github.com/bulkhead/bulkhead/pkg/grpcserver"
	"github.com/bulkhead/bulkhead/pkg/logging"
	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/pkg/ratelimit"
	"github.com/bulkhead/bulkhead/services/connection/internal/app"
	"github.com/bulkhead/bulkhead/services/connection/internal/broker"
	"github.com/bulkhead/bulkhead/services/connection/internal/catalog"
	"github.com/bulkhead/bulkhead/services/connection/internal/config"
	"github.com/bulkhead/bulkhead/services/connection/internal/egress"
	"github.com/bulkhead/bulkhead/services/connection/internal/fairness"
	"github.com/bulkhead/bulkhead/services/connection/internal/identity"
	"github.com/bulkhead/bulkhead/services/connection/internal/server"
	"github.com/bulkhead/bulkhead/services/connection/internal/store/postgres"
	"github.com/bulkhead/bulkhead/services/connection/migrations"
)

// Re-exported configuration types, so code outside this module can build a Config.
type (
	// Config is the connection service's configuration (see services/connection/README.md).
	Config = config.Config
	// Secret is a configuration value that never prints.
	Secret = config.Secret
	// OAuthApp is a platform OAuth app of one integration.
	OAuthApp = config.OAuthApp
	// Catalog is the provider catalog.
	Catalog = catalog.Catalog
)

// Audience is the connection service's audience: tokens for its RPCs must carry it.
const Audience = "bulkhead.connection"

// VersionTable is goose's version table for the service's migrations.
const VersionTable = "connection_schema_version"

// CallbackPath is the path of the OAuth2 redirect URI on the HTTP listener.
const CallbackPath = server.CallbackPath

// DefaultConfig returns the defaults; set at least the database, identity and broker settings.
func DefaultConfig() Config { return config.Default() }

// ConfigFromEnv reads the configuration from the environment through getenv.
func ConfigFromEnv(getenv func(string) string) (Config, error) { return config.FromEnv(getenv) }

// Migrate applies the service's migrations with cfg.MigrateDatabaseURL (the owner role) and
// grants the app role named in cfg.DatabaseURL what it needs.
func Migrate(ctx context.Context, cfg Config, logger *slog.Logger) error {
	if cfg.MigrateDatabaseURL == "" {
		return fmt.Errorf("launch: migrate: %s is not set", config.EnvMigrateDatabaseURL)
	}
	appRole, err := config.AppRole(cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("launch: migrate: %s %w", config.EnvDatabaseURL, err)
	}
	err = pgtenant.Migrate(ctx, cfg.MigrateDatabaseURL.Reveal(), migrations.FS, pgtenant.MigrateOptions{
		AppRole: appRole, VersionTable: VersionTable, Logger: logger,
	})
	if err != nil {
		return fmt.Errorf("launch: %w", err)
	}
	return nil
}

// Options are the process-level pieces Start does not read from Config.
type Options struct {
	// Logger receives the service's logs; nil discards them.
	Logger *slog.Logger
	// Now is the clock of every expiry decision (refresh margins, states, checks); nil means
	// time.Now. Tokens are always verified with the real time.
	Now func() time.Time
	// Catalog replaces the embedded provider catalog (tests add loopback providers with
	// catalog.AllowLoopback); nil loads the embedded one.
	Catalog *catalog.Catalog
	// Proxy configures the egress guard of every provider call (the Proxy RPC's and the
	// service's own token, revocation and test calls) and Proxy's per (tenant, integration)
	// limits.
	Proxy ProxyOptions
	// Offboarding configures the consumer of identity's member.removed events (see
	// offboarding.go).
	Offboarding OffboardingOptions
	// Worker configures the background worker: pending revocations and proactive refreshes
	// (see worker.go).
	Worker WorkerOptions
}

// ProxyOptions configure the Proxy RPC. The zero value is production's: no allow-listed
// hosts, fairness's and egress's defaults. Fields left zero take the environment's values
// (BULKHEAD_CONNECTION_PROXY_*, through Config).
type ProxyOptions struct {
	// AllowHosts may be (or resolve to) private, loopback or link-local addresses: "host" or
	// "host:port", matched exactly (egress.Config.AllowHosts). Tests list the loopback provider.
	AllowHosts []string
	// Rate and Burst size each (tenant, integration) token bucket.
	Rate  float64
	Burst int
	// BreakerFailures consecutive provider failures open a (tenant, integration) circuit for
	// BreakerOpen.
	BreakerFailures uint32
	BreakerOpen     time.Duration
}

// withConfig fills the options the caller left zero from cfg (the environment's settings):
// code that sets an option wins, and either side can turn a background consumer off.
func withConfig(o Options, cfg Config) Options {
	if len(o.Proxy.AllowHosts) == 0 {
		o.Proxy.AllowHosts = cfg.ProxyAllowHosts
	}
	if o.Proxy.Rate == 0 {
		o.Proxy.Rate = cfg.ProxyRate
	}
	if o.Proxy.Burst == 0 {
		o.Proxy.Burst = cfg.ProxyBurst
	}
	if o.Proxy.BreakerFailures == 0 {
		o.Proxy.BreakerFailures = cfg.ProxyBreakerFailures
	}
	if o.Proxy.BreakerOpen == 0 {
		o.Proxy.BreakerOpen = cfg.ProxyBreakerOpen
	}
	o.Offboarding.Disabled = o.Offboarding.Disabled || cfg.OffboardingDisabled
	if o.Offboarding.Interval == 0 {
		o.Offboarding.Interval = cfg.OffboardingInterval
	}
	o.Worker.Disabled = o.Worker.Disabled || cfg.WorkerDisabled
	if o.Worker.Interval == 0 {
		o.Worker.Interval = cfg.WorkerInterval
	}
	if o.Worker.Batch == 0 {
		o.Worker.Batch = cfg.WorkerBatch
	}
	return o
}

// Running is a started connection service.
type Running struct {
	// GRPCAddr and HTTPAddr are the addresses actually listened on (host:port).
	GRPCAddr string
	HTTPAddr string
	// CallbackURL is the OAuth2 redirect URI in use.
	CallbackURL string

	cancel  context.CancelFunc
	done    chan struct{}
	err     error
	closers []func()
	once    sync.Once
}

// Start builds the service from cfg and serves until Close is called (ctx bounds start-up
// only). It runs the migrations first when cfg.MigrateDatabaseURL is set.
func Start(ctx context.Context, cfg Config, opts Options) (_ *Running, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("launch: invalid configuration: %w", err)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = slog.New(logging.NewHandler(logger.Handler()))
	cat := opts.Catalog
	if cat == nil {
		if cat, err = catalog.Load(); err != nil {
			return nil, fmt.Errorf("launch: catalog: %w", err)
		}
	}
	r := &Running{done: make(chan struct{})}
	defer func() {
		if err != nil {
			r.closeAll()
		}
	}()

	if cfg.MigrateDatabaseURL != "" {
		if err := Migrate(ctx, cfg, logger); err != nil {
			return nil, err
		}
	}
	db, err := pgtenant.Connect(ctx, cfg.DatabaseURL.Reveal())
	if err != nil {
		return nil, fmt.Errorf("launch: database: %w", err)
	}
	r.closers = append(r.closers, db.Close)

	// Identity: the service's own token, user tokens for the callback, the kill switch.
	idConn, err := grpc.NewClient(cfg.IdentityAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("launch: identity at %s: %w", cfg.IdentityAddr, err)
	}
	r.closers = append(r.closers, func() { _ = idConn.Close() })
	idc, err := identity.New(identity.Config{Conn: idConn, ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret.Reveal()})
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	// The vault-broker: calls act for the incoming caller (or grpcclient.ActAs) and carry the
	// service's own token.
	brokerConn, err := grpcclient.Dial(cfg.BrokerAddr, grpcclient.Options{ServiceToken: idc})
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	r.closers = append(r.closers, func() { _ = brokerConn.Close() })

	keys, err := authn.NewRemoteKeys(ctx, authn.RemoteKeysConfig{URL: cfg.IdentityJWKSURL})
	if err != nil {
		return nil, fmt.Errorf("launch: identity keys: %w", err)
	}
	r.closers = append(r.closers, func() { _ = keys.Close(context.Background()) })
	verifier, err := authn.NewVerifier(authn.VerifierConfig{
		Issuer: cfg.Issuer, Audience: Audience, Keys: keys, Tenants: idc, TenantStatusTTL: cfg.TenantStatusTTL,
	})
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}

	var lc net.ListenConfig
	grpcLis, err := lc.Listen(ctx, "tcp", cfg.GRPCAddr)
	if err != nil {
		return nil, fmt.Errorf("launch: listen %s: %w", cfg.GRPCAddr, err)
	}
	r.closers = append(r.closers, func() { _ = grpcLis.Close() })
	httpLis, err := lc.Listen(ctx, "tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("launch: listen %s: %w", cfg.HTTPAddr, err)
	}
	r.closers = append(r.closers, func() { _ = httpLis.Close() })
	r.GRPCAddr, r.HTTPAddr = grpcLis.Addr().String(), httpLis.Addr().String()
	r.CallbackURL = cfg.CallbackURL
	if r.CallbackURL == "" {
		r.CallbackURL = "http://" + r.HTTPAddr + CallbackPath
	}

	apps := make(map[string]app.OAuthClient, len(cfg.OAuthApps))
	for k, v := range cfg.OAuthApps {
		apps[k] = app.OAuthClient{ClientID: v.ClientID, ClientSecret: v.ClientSecret.Reveal()}
	}
	opts = withConfig(opts, cfg)
	guard, err := egress.New(egress.Config{AllowHosts: opts.Proxy.AllowHosts, AllowHTTP: cat.AllowsLoopback()})
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	r.closers = append(r.closers, guard.Close)
	fair, err := fairness.New(fairness.Config{
		Rate: rate.Limit(opts.Proxy.Rate), Burst: opts.Proxy.Burst,
		BreakerFailures: opts.Proxy.BreakerFailures, BreakerOpen: opts.Proxy.BreakerOpen,
	})
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	st := postgres.New(db)
	uc, err := app.New(app.Config{
		Egress: guard, Fairness: fair,
		Store: st, Catalog: cat, Credentials: broker.New(brokerConn), UserTokens: idc, Tenants: idc,
		PlatformApps: apps, CallbackURL: r.CallbackURL, ReturnURLPrefixes: cfg.ReturnURLPrefixes,
		RefreshMargin: cfg.RefreshMargin, CheckInterval: cfg.CheckInterval, RevocationGiveUp: cfg.RevocationGiveUp,
		Now: opts.Now, Logger: logger,
	})
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	limiter, err := ratelimit.New(ratelimit.Config{Rate: rate.Limit(cfg.RateLimit), Burst: cfg.RateBurst})
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	gs, err := grpcserver.New(grpcserver.Config{Logger: logger, Verifier: verifier, Policy: server.Policy(), RateLimiter: limiter})
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	events, err := app.NewEvents(st)
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	if err := server.Register(gs, uc, events); err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	if err := gs.CheckPolicy(); err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}

	mux := http.NewServeMux()
	mux.Handle(CallbackPath, server.Callback(uc, logger))
	mux.Handle("/healthz", healthz(db))

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.cancel = cancel
	if err := startOffboarding(runCtx, r, opts.Offboarding, db, idConn, idc, uc, logger); err != nil {
		cancel()
		return nil, err
	}
	if err := startWorker(runCtx, r, opts.Worker, cfg, st, uc, opts.Now, logger); err != nil {
		cancel()
		return nil, err
	}
	httpSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, BaseContext: func(net.Listener) context.Context { return runCtx }}
	errc := make(chan error, 2)
	go func() { errc <- gs.Run(runCtx, grpcLis) }()
	go func() {
		if err := httpSrv.Serve(httpLis); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("launch: http: %w", err)
			return
		}
		errc <- nil
	}()
	go func() {
		var errs []error
		errs = append(errs, <-errc)
		cancel()
		shutdownCtx, stop := context.WithTimeout(context.Background(), 10*time.Second)
		errs = append(errs, httpSrv.Shutdown(shutdownCtx))
		stop()
		errs = append(errs, <-errc)
		r.closeAll()
		r.err = errors.Join(errs...)
		close(r.done)
	}()
	logger.InfoContext(ctx, "connection service started", "grpc_addr", r.GRPCAddr, "http_addr", r.HTTPAddr,
		"callback_url", r.CallbackURL, "integrations", cat.Len(), "config", cfg)
	return r, nil
}

// Done is closed once the service has stopped.
func (r *Running) Done() <-chan struct{} { return r.done }

// Wait blocks until the service has stopped and returns why (nil after a requested shutdown).
func (r *Running) Wait() error {
	<-r.done
	return r.err
}

// Close stops the service gracefully and waits for it.
func (r *Running) Close() error {
	if r.cancel != nil {
		r.cancel()
	}
	return r.Wait()
}

func (r *Running) closeAll() {
	r.once.Do(func() {
		for i := len(r.closers) - 1; i >= 0; i-- {
			r.closers[i]()
		}
	})
}

// healthz answers 200 when the database answers, 503 otherwise.
func healthz(db *pgtenant.DB) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := db.InGlobalTx(ctx, func(pgx.Tx) error { return nil }); err != nil {
			http.Error(w, "database unavailable", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
}
