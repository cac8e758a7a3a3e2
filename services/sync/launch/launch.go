// Package launch builds and runs the sync service in-process: the gRPC server with Bulkhead's
// interceptor chain, the sync engine on River, and the change listener behind WatchChanges.
// Tests and launchers start it on a 127.0.0.1:0 address.
package launch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	syncv1 "github.com/bulkhead/bulkhead/gen/bulkhead/sync/v1"
	"github.com/bulkhead/bulkhead/pkg/authn"
	"github.com/bulkhead/bulkhead/pkg/grpcserver"
	"github.com/bulkhead/bulkhead/pkg/logging"
	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/pkg/ratelimit"
	"github.com/bulkhead/bulkhead/pkg/secret"
	"github.com/bulkhead/bulkhead/services/sync/internal/broker"
	"github.com/bulkhead/bulkhead/services/sync/internal/connection"
	"github.com/bulkhead/bulkhead/services/sync/internal/connevents"
	"github.com/bulkhead/bulkhead/services/sync/internal/definition"
	"github.com/bulkhead/bulkhead/services/sync/internal/engine"
	"github.com/bulkhead/bulkhead/services/sync/internal/fetch"
	"github.com/bulkhead/bulkhead/services/sync/internal/identity"
	"github.com/bulkhead/bulkhead/services/sync/internal/purge"
	"github.com/bulkhead/bulkhead/services/sync/internal/seal"
	"github.com/bulkhead/bulkhead/services/sync/internal/server"
	"github.com/bulkhead/bulkhead/services/sync/internal/webhook"
	"github.com/bulkhead/bulkhead/services/sync/migrations"
)

// Audience is the sync service's audience: tokens for its RPCs must carry it.
const Audience = "bulkhead.sync"

// Secret is a configuration value that never prints (fmt, JSON, slog): pkg/secret's Value.
type Secret = secret.Value

// Config is the service's configuration.
type Config struct {
	// GRPCAddr is where the API listens.
	GRPCAddr string
	// DatabaseURL connects as the app role (sync_app); MigrateDatabaseURL, if set, as the owner
	// role, to migrate at start-up (River's tables included).
	DatabaseURL        Secret
	MigrateDatabaseURL Secret
	// AppRole is granted DML by the migrations; default sync_app.
	AppRole string
	// Identity: gRPC address, JWKS URL, issuer, and the service's platform credential.
	IdentityAddr    string
	IdentityJWKSURL string
	Issuer          string
	ClientID        string
	ClientSecret    Secret
	TenantStatusTTL time.Duration
	// RateLimit and RateBurst limit API calls per tenant.
	RateLimit float64
	RateBurst int
	// BaseURLs gives base URLs to integrations whose definition has none (test providers).
	BaseURLs map[string]string
	// MaxWorkers and TenantConcurrency size the engine (see engine.Config).
	MaxWorkers        int
	TenantConcurrency int
	// WatchKeepAlive is how often an idle WatchChanges stream gets a keep-alive [15s].
	WatchKeepAlive time.Duration
	// ConnectionAddr is the connection service's gRPC address: credentials for runs come from
	// its GetAccessToken (unless Options.Tokens replaces it).
	ConnectionAddr string
	// BrokerAddr is the vault-broker's gRPC address: it encrypts and decrypts the sensitive
	// fields of models that list some (definition.SensitiveFields). Empty: runs of such models
	// are cancelled and their stored records cannot be read.
	BrokerAddr string
	// RecordHashKey keys the content hashes of records with sensitive fields (HMAC-SHA256 of
	// the plaintext, see internal/seal); required with BrokerAddr, at least 32 characters.
	// Changing it makes the next run rewrite (and emit) every such record once.
	RecordHashKey Secret
}

// DefaultConfig returns the defaults; set at least the database and identity settings.
func DefaultConfig() Config {
	return Config{
		GRPCAddr: "127.0.0.1:8093", AppRole: "sync_app", Issuer: "bulkhead-identity", ClientID: "sync",
		TenantStatusTTL: authn.DefaultTenantStatusTTL, RateLimit: 50, RateBurst: 100,
	}
}

// Validate reports missing settings.
func (c Config) Validate() error {
	var errs []error
	if c.DatabaseURL == "" {
		errs = append(errs, errors.New("DatabaseURL is required"))
	}
	if c.IdentityAddr == "" || c.IdentityJWKSURL == "" || c.Issuer == "" {
		errs = append(errs, errors.New("IdentityAddr, IdentityJWKSURL and Issuer are required"))
	}
	if c.AppRole == "" {
		errs = append(errs, errors.New("AppRole is required"))
	}
	if c.ClientID == "" || c.ClientSecret == "" {
		errs = append(errs, errors.New("ClientID and ClientSecret (the service's platform credential) are required"))
	}
	if c.BrokerAddr != "" && len(c.RecordHashKey) < minHashKey {
		errs = append(errs, fmt.Errorf("RecordHashKey of at least %d characters is required with BrokerAddr", minHashKey))
	}
	for name, u := range c.BaseURLs {
		if _, err := url.Parse(u); err != nil || name == "" {
			errs = append(errs, fmt.Errorf("BaseURLs[%q] is not a URL", name))
		}
	}
	return errors.Join(errs...)
}

const minHashKey = 32

// Options are the process-level pieces Start does not read from Config.
type Options struct {
	Logger *slog.Logger
	// Tokens, if set, supplies connection credentials instead of the connection service at
	// Config.ConnectionAddr (tests that run no connection service).
	Tokens engine.AccessTokens
	// Fetch tunes outbound calls (nil: fetch's defaults).
	Fetch *fetch.Config
	// Engine, if set, may adjust the engine's configuration (tests: retry policy, hooks).
	Engine func(*engine.Config)
	// Webhooks, if set, may adjust the webhook dispatcher's configuration (tests: loopback
	// receivers with their own certificate, short retries).
	Webhooks func(*webhook.Config)
	// ConnectionEvents, if set, may adjust the connection events consumer (tests: interval,
	// pass hook). The consumer runs when Config.ConnectionAddr is set.
	ConnectionEvents func(*connevents.Config)
	// PurgeBatch bounds the rows PurgeTenant deletes per table per call [purge.DefaultBatch].
	PurgeBatch int
}

// Running is a started service.
type Running struct {
	// GRPCAddr is the address actually listened on.
	GRPCAddr string
	// Engine is the sync engine (tests drive and observe it).
	Engine *engine.Engine

	cancel  context.CancelFunc
	done    chan struct{}
	err     error
	closers []func()
	once    sync.Once
}

// Start builds the service and serves until ctx ends or Close is called.
func Start(ctx context.Context, cfg Config, opts Options) (_ *Running, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("launch: invalid configuration: %w", err)
	}
	if opts.Tokens == nil && cfg.ConnectionAddr == "" {
		return nil, errors.New("launch: ConnectionAddr is required (or Options.Tokens)")
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = slog.New(logging.NewHandler(logger.Handler()))
	r := &Running{done: make(chan struct{})}
	defer func() {
		if err != nil {
			r.closeAll()
		}
	}()
	if cfg.MigrateDatabaseURL != "" {
		if err := migrations.Apply(ctx, cfg.MigrateDatabaseURL.Reveal(), cfg.AppRole, logger); err != nil {
			return nil, fmt.Errorf("launch: migrate: %w", err)
		}
	}
	pool, err := pgxpool.New(ctx, cfg.DatabaseURL.Reveal())
	if err != nil {
		return nil, fmt.Errorf("launch: database: %w", err)
	}
	r.closers = append(r.closers, pool.Close)
	if err := pool.Ping(ctx); err != nil {
		return nil, fmt.Errorf("launch: database: %w", err)
	}

	conn, err := grpc.NewClient(cfg.IdentityAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("launch: identity at %s: %w", cfg.IdentityAddr, err)
	}
	r.closers = append(r.closers, func() { _ = conn.Close() })
	idc, err := identity.New(identity.Config{Conn: conn, ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret.Reveal()})
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	tokens := opts.Tokens
	var cc *grpc.ClientConn
	if cfg.ConnectionAddr != "" {
		if cc, err = grpc.NewClient(cfg.ConnectionAddr, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
			return nil, fmt.Errorf("launch: connection service at %s: %w", cfg.ConnectionAddr, err)
		}
		r.closers = append(r.closers, func() { _ = cc.Close() })
	}
	if tokens == nil {
		if tokens, err = connection.New(connection.Config{Conn: cc, Tenants: idc}); err != nil {
			return nil, fmt.Errorf("launch: %w", err)
		}
	}
	tenants, err := authn.NewCachedTenantStatus(idc, authn.CachedTenantStatusConfig{TTL: cfg.TenantStatusTTL})
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	keys, err := authn.NewRemoteKeys(ctx, authn.RemoteKeysConfig{URL: cfg.IdentityJWKSURL})
	if err != nil {
		return nil, fmt.Errorf("launch: identity keys: %w", err)
	}
	r.closers = append(r.closers, func() { _ = keys.Close(context.Background()) })
	verifier, err := authn.NewVerifier(authn.VerifierConfig{
		Issuer: cfg.Issuer, Audience: Audience, Keys: keys, Tenants: tenants, TenantStatusTTL: cfg.TenantStatusTTL,
	})
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}

	defs, err := definition.Load()
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	var fcfg fetch.Config
	if opts.Fetch != nil {
		fcfg = *opts.Fetch
	}
	fetcher, err := fetch.New(fcfg)
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	wcfg := webhook.Config{DB: pgtenant.New(pool), Logger: logger}
	if opts.Webhooks != nil {
		opts.Webhooks(&wcfg)
	}
	hooks, err := webhook.New(wcfg)
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	var cipher seal.Cipher
	if cfg.BrokerAddr != "" {
		bc, bconn, err := broker.Dial(cfg.BrokerAddr, idc)
		if err != nil {
			return nil, fmt.Errorf("launch: vault-broker at %s: %w", cfg.BrokerAddr, err)
		}
		r.closers = append(r.closers, func() { _ = bconn.Close() })
		cipher = bc
	}
	ecfg := engine.Config{
		Pool: pool, Definitions: defs, Fetcher: fetcher, Tokens: tokens, BaseURLs: cfg.BaseURLs,
		Tenants: tenants, Logger: logger, MaxWorkers: cfg.MaxWorkers, TenantConcurrency: cfg.TenantConcurrency,
		Webhooks: hooks, Cipher: cipher, HashKey: []byte(cfg.RecordHashKey.Reveal()),
	}
	if opts.Engine != nil {
		opts.Engine(&ecfg)
	}
	eng, err := engine.New(ecfg)
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	r.Engine = eng

	var consumer *connevents.Worker
	if cc != nil {
		src, err := connevents.NewClient(cc, idc.ServiceToken)
		if err != nil {
			return nil, fmt.Errorf("launch: %w", err)
		}
		ccfg := connevents.Config{DB: pgtenant.New(pool), Source: src, Handler: connectionHandler(eng), Logger: logger}
		if opts.ConnectionEvents != nil {
			opts.ConnectionEvents(&ccfg)
		}
		if consumer, err = connevents.New(ccfg); err != nil {
			return nil, fmt.Errorf("launch: %w", err)
		}
	}

	limiter, err := ratelimit.New(ratelimit.Config{Rate: rate.Limit(cfg.RateLimit), Burst: cfg.RateBurst})
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	policy := server.Policy()
	maps.Copy(policy, server.WebhookPolicy())
	maps.Copy(policy, server.OffboardingPolicy())
	gs, err := grpcserver.New(grpcserver.Config{Logger: logger, Verifier: verifier, Policy: policy, RateLimiter: limiter})
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	hub := server.NewHub(pool, logger)
	syncv1.RegisterSyncServiceServer(gs, server.NewSyncs(eng, hub, cipher, cfg.WatchKeepAlive))
	syncv1.RegisterWebhookServiceServer(gs, server.NewWebhooks(hooks, eng))
	purger, err := purge.New(purge.Config{DB: eng.DB(), Jobs: eng.River(), Batch: opts.PurgeBatch, Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	syncv1.RegisterTenantDataServiceServer(gs, server.NewTenantData(purger, idc, logger))

	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", cfg.GRPCAddr)
	if err != nil {
		return nil, fmt.Errorf("launch: listen %s: %w", cfg.GRPCAddr, err)
	}
	r.GRPCAddr = lis.Addr().String()
	if err := eng.Start(ctx); err != nil {
		_ = lis.Close()
		return nil, fmt.Errorf("launch: %w", err)
	}
	// Stopped before the pool closes (closers run last first): runs get their soft-stop time
	// and are left resumable.
	r.closers = append(r.closers, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := eng.Stop(sctx); err != nil {
			logger.Error("stopping the sync engine", "error", err)
		}
	})

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.cancel = cancel
	hubDone := make(chan struct{})
	go func() { hub.Run(runCtx); close(hubDone) }()
	consumerDone := make(chan struct{})
	go func() {
		defer close(consumerDone)
		if consumer != nil {
			consumer.Run(runCtx)
		}
	}()
	errc := make(chan error, 1)
	go func() { errc <- gs.Run(runCtx, lis) }()
	go func() {
		select {
		case <-ctx.Done():
			cancel()
		case <-runCtx.Done():
		}
	}()
	go func() {
		err := <-errc
		cancel()
		<-hubDone
		<-consumerDone
		r.closeAll()
		r.err = err
		close(r.done)
	}()
	logger.InfoContext(ctx, "sync started", "grpc_addr", r.GRPCAddr)
	return r, nil
}

// connectionHandler turns a connection event into a connection.changed webhook event, pausing
// the syncs of a revoked or deleted connection.
func connectionHandler(eng *engine.Engine) connevents.Handler {
	return func(ctx context.Context, ev connevents.Event) error {
		_, err := eng.ConnectionChanged(ctx, ev.TenantID, engine.ConnectionChange{
			ConnectionID: ev.ConnectionID, Type: ev.Type, ConnectionEventID: ev.ID,
			Integration: ev.Integration, Status: ev.Status, Reason: ev.Reason,
		}, connevents.Stops(ev.Type))
		return err
	}
}

// Done is closed when the service has stopped.
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
