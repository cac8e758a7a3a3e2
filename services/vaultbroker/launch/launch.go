// Package launch builds and runs the vault-broker in-process: the gRPC server with Bulkhead's
// interceptor chain, the audit log in the broker's own PostgreSQL database, and the Vault layer
// verified against the server at start-up. cmd/vaultbroker runs it from environment
// configuration; tests and the `bulkhead run` launcher start it the same way, on a 127.0.0.1:0
// address.
package launch

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/bulkhead/bulkhead/pkg/authn"
	"github.com/bulkhead/bulkhead/pkg/grpcserver"
	"github.com/bulkhead/bulkhead/pkg/logging"
	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/pkg/ratelimit"
	"github.com/bulkhead/bulkhead/services/vaultbroker/internal/audit"
	"github.com/bulkhead/bulkhead/services/vaultbroker/internal/config"
	"github.com/bulkhead/bulkhead/services/vaultbroker/internal/identity"
	"github.com/bulkhead/bulkhead/services/vaultbroker/internal/server"
	"github.com/bulkhead/bulkhead/services/vaultbroker/internal/vault"
	"github.com/bulkhead/bulkhead/services/vaultbroker/migrations"
)

// Re-exported types, so code outside this module can configure and observe a broker.
type (
	// Config is the broker's configuration (see services/vaultbroker/README.md).
	Config = config.Config
	// Secret is a configuration value that never prints.
	Secret = config.Secret
	// VaultStats are the tenant token cache's counters (logins, renewals, evictions…).
	VaultStats = vault.Stats
	// IdentityStats count the broker's calls to identity.
	IdentityStats = identity.Stats
	// AuditStats count audit events that could not be stored.
	AuditStats = server.AuditStats
)

// Audience is the broker's audience: tokens for its RPCs must carry it.
const Audience = "bulkhead.vaultbroker"

// MaxRecvMsgSize bounds a request on the wire. Credentials and plaintexts are limited to
// 64 KiB by the Vault layer (a clear INVALID_ARGUMENT); this only keeps a huge message from
// being read into memory at all.
const MaxRecvMsgSize = 512 << 10

// ErrNamespacesUnsupported is returned by Start when namespace mode is configured on a server
// that does not prove it isolates namespaces (open-source Vault).
var ErrNamespacesUnsupported = vault.ErrNamespacesUnsupported

// DefaultConfig returns the defaults; set at least the database, Vault and identity settings.
func DefaultConfig() Config { return config.Default() }

// ConfigFromEnv reads the configuration from the environment through getenv.
func ConfigFromEnv(getenv func(string) string) (Config, error) { return config.FromEnv(getenv) }

// Migrate applies the broker's migrations with cfg.MigrateDatabaseURL (the owner role) and
// grants the app role named in cfg.DatabaseURL what it needs — on the audit table only INSERT
// and SELECT.
func Migrate(ctx context.Context, cfg Config, logger *slog.Logger) error {
	if cfg.MigrateDatabaseURL == "" {
		return fmt.Errorf("launch: migrate: %s is not set", config.EnvMigrateDatabaseURL)
	}
	appRole, err := config.AppRole(cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("launch: migrate: %s %w", config.EnvDatabaseURL, err)
	}
	if err := migrations.Apply(ctx, cfg.MigrateDatabaseURL.Reveal(), appRole, logger); err != nil {
		return fmt.Errorf("launch: %w", err)
	}
	return nil
}

// Options are the process-level pieces Start does not read from Config.
type Options struct {
	// Logger receives the service's logs; nil discards them.
	Logger *slog.Logger
	// Now is the clock of token refresh decisions; nil means time.Now.
	Now func() time.Time
}

// Running is a started broker.
type Running struct {
	// GRPCAddr is the address actually listened on (host:port).
	GRPCAddr string
	// Mode is the verified Vault mode: "mount" or "namespace".
	Mode string

	broker  *vault.Broker
	idc     *identity.Client
	auditor *server.Auditor

	cancel  context.CancelFunc
	done    chan struct{}
	err     error
	closers []func()
	once    sync.Once
}

// VaultStats returns the tenant token cache's counters: tests use Logins to prove that a
// refused request never reached Vault.
func (r *Running) VaultStats() VaultStats { return r.broker.Stats() }

// ForgetVaultToken drops tenantID's cached Vault token and client, so the tenant's next
// request logs in again (after a change to the tenant's Vault role or policy; benchmarks use
// it to measure a cold tenant).
func (r *Running) ForgetVaultToken(tenantID string) { r.broker.Forget(tenantID) }

// IdentityStats returns the counters of the broker's calls to identity.
func (r *Running) IdentityStats() IdentityStats { return r.idc.Stats() }

// AuditStats returns the counters of audit events that could not be stored.
func (r *Running) AuditStats() AuditStats { return r.auditor.Stats() }

// Start builds the broker from cfg and serves until ctx ends or Close is called: migrations
// (when cfg.MigrateDatabaseURL is set), the optional Vault bootstrap (cfg.AdminToken), the
// verification of the Vault mode — namespace mode on a server without namespaces fails here
// with an error wrapping ErrNamespacesUnsupported that says why — and the gRPC server.
func Start(ctx context.Context, cfg Config, opts Options) (_ *Running, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("launch: invalid configuration: %w", err)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	// Every line logged with a request's context carries its request id, tenant and caller.
	logger = slog.New(logging.NewHandler(logger.Handler()))
	r := &Running{done: make(chan struct{})}
	// Whatever is built is torn down again if a later step fails.
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

	// Identity: the broker's own credential, the Vault JWT exchange and the kill switch.
	conn, err := grpc.NewClient(cfg.IdentityAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("launch: identity at %s: %w", cfg.IdentityAddr, err)
	}
	r.closers = append(r.closers, func() { _ = conn.Close() })
	r.idc, err = identity.New(identity.Config{Conn: conn, ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret.Reveal()})
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}

	// Vault: verify the mode before anything is served; never fall back.
	vcfg := vault.Config{
		Addr:            cfg.VaultAddr,
		Mode:            vault.Mode(cfg.VaultMode),
		NamespaceParent: cfg.NamespaceParent,
		Trust:           vault.JWTTrust{JWKSURL: cfg.JWKSURLForVault(), BoundIssuer: cfg.Issuer},
		// Tenant roles accept only JWTs identity exchanged for this broker (act.sub), so the
		// broker's credential alone — a service token, or a tenant token identity issues to a
		// service acting on its own — cannot log in to any tenant.
		Actor:     "svc:" + cfg.ClientID,
		TokenType: vault.TokenType(cfg.VaultTokenType),
		CacheSize: cfg.VaultCacheSize,
		Logger:    logger,
		Now:       opts.Now,
	}
	if cfg.AdminToken != "" {
		res, err := vault.Bootstrap(ctx, vcfg, cfg.AdminToken.Reveal())
		if err != nil {
			return nil, fmt.Errorf("launch: vault bootstrap: %w", err)
		}
		logger.InfoContext(ctx, "vault bootstrapped", "changes", res.Changes)
	}
	verified, err := vault.Verify(ctx, vcfg, cfg.ProvisionerToken.Reveal())
	if err != nil {
		return nil, fmt.Errorf("launch: vault mode %s: %w", cfg.VaultMode, err)
	}
	prov, err := vault.NewProvisioner(vcfg, verified, cfg.ProvisionerToken.Reveal())
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	r.closers = append(r.closers, prov.Close)
	r.broker, err = vault.NewBroker(vcfg, verified, r.idc)
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	r.closers = append(r.closers, r.broker.Close)
	r.Mode = string(verified.Mode())

	// Authentication against identity's keys, with the kill switch.
	keys, err := authn.NewRemoteKeys(ctx, authn.RemoteKeysConfig{URL: cfg.IdentityJWKSURL})
	if err != nil {
		return nil, fmt.Errorf("launch: identity keys: %w", err)
	}
	r.closers = append(r.closers, func() { _ = keys.Close(context.Background()) })
	verifier, err := authn.NewVerifier(authn.VerifierConfig{
		Issuer: cfg.Issuer, Audience: Audience, Keys: keys, Tenants: r.idc, TenantStatusTTL: cfg.TenantStatusTTL,
	})
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}

	// Refused calls may write at most this many audit rows per tenant and second (authz runs
	// before rate limiting, so a refused caller is not otherwise slowed down).
	refusals, err := ratelimit.New(ratelimit.Config{Rate: 20, Burst: 40})
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	r.auditor, err = server.NewAuditor(server.AuditorConfig{
		Sink: audit.NewGroup(audit.NewStore(db), audit.GroupConfig{}), Logger: logger, RefusalLimiter: refusals, Now: opts.Now,
	})
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	limiter, err := ratelimit.New(ratelimit.Config{Rate: rate.Limit(cfg.RateLimit), Burst: cfg.RateBurst})
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	gs, err := grpcserver.New(grpcserver.Config{
		Logger: logger, Verifier: verifier, Policy: server.Policy(r.auditor.Denied), RateLimiter: limiter,
		ServerOptions: []grpc.ServerOption{
			// Appended after the standard chain, so it runs innermost, right around the handler.
			grpc.ChainUnaryInterceptor(r.auditor.UnaryInterceptor()),
			grpc.MaxRecvMsgSize(MaxRecvMsgSize),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	handlers, err := server.New(r.broker, prov, verified.Mode())
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	if err := server.Register(gs, handlers); err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}

	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", cfg.GRPCAddr)
	if err != nil {
		return nil, fmt.Errorf("launch: listen %s: %w", cfg.GRPCAddr, err)
	}
	r.GRPCAddr = lis.Addr().String()

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.cancel = cancel
	errc := make(chan error, 1)
	go func() { errc <- gs.Run(runCtx, lis) }()
	// Stop when the caller's context ends (main's signal context), as well as on Close.
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
		r.closeAll()
		r.err = err
		close(r.done)
	}()
	logger.InfoContext(ctx, "vault-broker started", "grpc_addr", r.GRPCAddr, "vault_mode", r.Mode, "config", cfg)
	return r, nil
}

// Done is closed when the broker has stopped (after Close, ctx's end, or a server failure).
func (r *Running) Done() <-chan struct{} { return r.done }

// Wait blocks until the broker has stopped and returns why (nil after a requested shutdown).
func (r *Running) Wait() error {
	<-r.done
	return r.err
}

// Close stops the broker gracefully (in-flight calls finish, within grpcserver's grace
// period) and waits for it.
func (r *Running) Close() error {
	if r.cancel != nil {
		r.cancel()
	}
	return r.Wait()
}

// closeAll releases what Start built, last first.
func (r *Running) closeAll() {
	r.once.Do(func() {
		for i := len(r.closers) - 1; i >= 0; i-- {
			r.closers[i]()
		}
	})
}
