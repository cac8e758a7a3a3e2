// Package launch builds and runs the identity service in-process: the gRPC server with
// Bulkhead's interceptor chain, and the HTTP listener for /.well-known/jwks.json and /healthz.
// cmd/identity runs it from environment configuration; tests (identity's own, and other
// services' through package identitytest) and the `bulkhead run` launcher start it the same way,
// on 127.0.0.1:0 addresses.
package launch

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/time/rate"

	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/pkg/authn"
	"github.com/bulkhead/bulkhead/pkg/authz"
	"github.com/bulkhead/bulkhead/pkg/claims"
	"github.com/bulkhead/bulkhead/pkg/grpcclient"
	"github.com/bulkhead/bulkhead/pkg/grpcserver"
	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/pkg/ratelimit"
	"github.com/bulkhead/bulkhead/services/identity/internal/app"
	"github.com/bulkhead/bulkhead/services/identity/internal/config"
	"github.com/bulkhead/bulkhead/services/identity/internal/lifecycle"
	"github.com/bulkhead/bulkhead/services/identity/internal/server"
	"github.com/bulkhead/bulkhead/services/identity/internal/store"
	"github.com/bulkhead/bulkhead/services/identity/internal/store/postgres"
	"github.com/bulkhead/bulkhead/services/identity/internal/token"
	"github.com/bulkhead/bulkhead/services/identity/migrations"
)

// Re-exported configuration types, so code outside this module can build a Config.
type (
	// Config is identity's configuration (see services/identity/README.md).
	Config = config.Config
	// Secret is a configuration value that never prints.
	Secret = config.Secret
	// PlatformCredential is one configured service or operator credential.
	PlatformCredential = config.PlatformCredential
)

// Kinds of platform credential.
const (
	KindService  = config.KindService
	KindOperator = config.KindOperator
)

// Audience is identity's own audience: tokens for identity's RPCs must carry it.
const Audience = app.AudienceIdentity

// VersionTable is goose's version table for identity's migrations, so identity can share a
// database with other services.
const VersionTable = "identity_schema_version"

// DefaultConfig returns the defaults; set at least DatabaseURL.
func DefaultConfig() Config { return config.Default() }

// ConfigFromEnv reads the configuration from the environment through getenv.
func ConfigFromEnv(getenv func(string) string) (Config, error) { return config.FromEnv(getenv) }

// NewPlatformCredential returns a credential for clientID with a fresh random secret: the
// credential (holding only the secret's hash) goes into Config.PlatformCredentials, the secret
// to whoever will call IssueToken with it.
func NewPlatformCredential(kind, clientID string, scopes ...authz.Permission) (PlatformCredential, string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return PlatformCredential{}, "", fmt.Errorf("launch: platform secret: %w", err)
	}
	secret := base64.RawURLEncoding.EncodeToString(b)
	sum := sha256.Sum256([]byte(secret))
	ss := make([]string, len(scopes))
	for i, s := range scopes {
		ss[i] = string(s)
	}
	return PlatformCredential{ClientID: clientID, SecretSHA256: hex.EncodeToString(sum[:]), Kind: kind, Scopes: ss}, secret, nil
}

// Migrate applies identity's migrations with cfg.MigrateDatabaseURL (the owner role) and grants
// the app role named in cfg.DatabaseURL what it needs.
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
	// DevOutput receives the operator credential generated in Dev mode (printed once, on
	// purpose outside the structured logs); nil means os.Stderr.
	DevOutput io.Writer
	// Now is the clock of the use cases (API key expiry, idempotency records); nil means
	// time.Now. Tokens are always signed and verified with the real time.
	Now func() time.Time
	// DeferLifecycle says the caller starts the tenant lifecycle saga itself with
	// StartLifecycle once its participants listen (the `make run` launcher), so Start does not
	// warn that the saga is not configured.
	DeferLifecycle bool
}

// Running is a started identity service.
type Running struct {
	// GRPCAddr and HTTPAddr are the addresses actually listened on (host:port).
	GRPCAddr string
	HTTPAddr string
	// JWKSURL is where other services fetch the keys that verify identity's tokens.
	JWKSURL string
	// Issuer is the `iss` of the tokens identity issues.
	Issuer string

	cancel  context.CancelFunc
	done    chan struct{}
	err     error
	closers []func()
	once    sync.Once

	// The tenant lifecycle saga: what StartLifecycle needs, and the worker once started.
	runCtx      context.Context
	saga        sagaDeps
	sagaMu      sync.Mutex
	sagaWorker  atomic.Pointer[lifecycle.Worker]
	sagaRunning sync.WaitGroup
}

type sagaDeps struct {
	store    lifecycle.Store
	issuer   *token.Issuer
	deadline time.Duration
	forget   func(tenantID string)
	logger   *slog.Logger
}

// LifecycleOutcome is what one attempt at a lifecycle step did.
type LifecycleOutcome = lifecycle.Outcome

// LifecycleTargets are the tenant lifecycle saga's participants and tuning. Start starts the
// saga itself when Config names both participants; tests, whose participants start after
// identity on ports chosen then, call StartLifecycle.
type LifecycleTargets struct {
	VaultBrokerAddr string
	ConnectionAddr  string
	SyncAddr        string
	// OffboardDeadline overrides Config.OffboardDeadline when positive.
	OffboardDeadline time.Duration
	// Interval and PendingRecheck override the worker's defaults (2s, 1m) when positive.
	Interval       time.Duration
	PendingRecheck time.Duration
	// OnStep, if set, is called after every attempt at a step.
	OnStep func(LifecycleOutcome)
}

// ServiceName is identity's own `svc:` name, the principal its saga calls other services as.
const ServiceName = "identity"

// sagaScopes are the permissions identity's own token carries: provisioning tenants in Vault
// and offboarding them from the connection service. Nothing else.
var sagaScopes = []string{string(authz.VaultProvision), string(authz.TenantsOffboard)}

// StartLifecycle starts the tenant lifecycle saga against t. It may be called once.
func (r *Running) StartLifecycle(t LifecycleTargets) error {
	r.sagaMu.Lock()
	defer r.sagaMu.Unlock()
	if r.sagaWorker.Load() != nil {
		return errors.New("launch: the lifecycle saga is already running")
	}
	if t.VaultBrokerAddr == "" || t.ConnectionAddr == "" || t.SyncAddr == "" {
		return errors.New("launch: the lifecycle saga needs the vault-broker's, the connection service's and the sync service's addresses")
	}
	d := r.saga
	self := grpcclient.TokenSourceFunc(func(ctx context.Context) (string, error) {
		tok, _, err := d.issuer.Issue(ctx, token.Grant{
			Kind: claims.KindService, Subject: ServiceName, Scopes: sagaScopes,
			Audience: []string{app.AudienceVaultBroker, app.AudienceConnection, app.AudienceSync},
		})
		return tok, err
	})
	opts := grpcclient.Options{ServiceToken: self, NoTenantMethods: lifecycle.NoTenantMethods}
	brokerConn, err := grpcclient.Dial(t.VaultBrokerAddr, opts)
	if err != nil {
		return fmt.Errorf("launch: vault-broker: %w", err)
	}
	connConn, err := grpcclient.Dial(t.ConnectionAddr, opts)
	if err != nil {
		_ = brokerConn.Close()
		return fmt.Errorf("launch: connection service: %w", err)
	}
	syncConn, err := grpcclient.Dial(t.SyncAddr, opts)
	if err != nil {
		_, _ = brokerConn.Close(), connConn.Close()
		return fmt.Errorf("launch: sync service: %w", err)
	}
	closeConns := func() { _, _, _ = brokerConn.Close(), connConn.Close(), syncConn.Close() }
	deadline := d.deadline
	if t.OffboardDeadline > 0 {
		deadline = t.OffboardDeadline
	}
	w, err := lifecycle.New(lifecycle.Config{
		Store: d.store, Vault: lifecycle.NewVaultClient(brokerConn), Connections: lifecycle.NewConnectionsClient(connConn),
		Sync:             lifecycle.NewSyncClient(syncConn),
		OffboardDeadline: deadline, Interval: t.Interval, PendingRecheck: t.PendingRecheck,
		StatusChanged: d.forget, Logger: d.logger, OnStep: t.OnStep,
	})
	if err != nil {
		closeConns()
		return fmt.Errorf("launch: %w", err)
	}
	r.closers = append(r.closers, closeConns)
	r.sagaRunning.Go(func() {
		w.Run(r.runCtx)
		w.Close()
	})
	r.sagaWorker.Store(w)
	d.logger.Info("tenant lifecycle saga started", "vaultbroker_addr", t.VaultBrokerAddr, "connection_addr", t.ConnectionAddr,
		"sync_addr", t.SyncAddr, "offboard_deadline", deadline.String())
	return nil
}

// onboardWait bounds how long CreateTenant waits for the new tenant's Vault provisioning
// (7–13 ms when Vault is healthy); past it the saga finishes in the background.
const onboardWait = 5 * time.Second

// onboard provisions a new tenant before CreateTenant answers, when the saga runs.
func (r *Running) onboard(ctx context.Context, tenantID string) {
	if w := r.sagaWorker.Load(); w != nil {
		w.RunNow(ctx, tenantID, store.StepVaultProvision, onboardWait)
	}
}

// statusChanged forgets tenantID's cached status and wakes the saga for the step the change
// made due.
func (r *Running) statusChanged(tenantID string) {
	r.saga.forget(tenantID)
	if w := r.sagaWorker.Load(); w != nil {
		w.Kick()
	}
}

// Start builds identity from cfg and serves until Close is called (ctx bounds start-up only:
// migrations, connecting, listening). It runs the migrations first when cfg.MigrateDatabaseURL
// is set. Addresses ending in ":0" pick free ports; Running reports the ones chosen.
func Start(ctx context.Context, cfg Config, opts Options) (_ *Running, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("launch: invalid configuration: %w", err)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &Running{Issuer: cfg.Issuer, done: make(chan struct{})}
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
	st := postgres.New(db)

	kek, err := kek(cfg, logger)
	if err != nil {
		return nil, err
	}
	keys, err := token.NewKeyring(ctx, token.KeyringConfig{Store: token.NewPostgresStore(db), KEK: kek, Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("launch: signing keys: %w", err)
	}
	issuer, err := token.NewIssuer(keys, token.IssuerConfig{Issuer: cfg.Issuer, DefaultTTL: cfg.TokenTTL})
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}

	// Identity answers the kill switch from its own database rather than over gRPC.
	tenantStatus, err := authn.NewCachedTenantStatus(authn.TenantStateFunc(func(ctx context.Context, tenantID string) (authn.TenantState, error) {
		s, err := st.TenantStatus(ctx, tenantID)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return authn.StateInactive, nil
		case err != nil:
			return authn.StateInactive, err
		case s == store.TenantActive:
			return authn.StateActive, nil
		case s == store.TenantDeleting:
			return authn.StateDeleting, nil
		default:
			return authn.StateInactive, nil
		}
	}), authn.CachedTenantStatusConfig{TTL: cfg.TenantStatusTTL})
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	verifier, err := newVerifier(cfg, keys, tenantStatus, Audience)
	if err != nil {
		return nil, err
	}
	subjects, err := newSubjectVerifier(cfg, keys, tenantStatus)
	if err != nil {
		return nil, err
	}

	creds := cfg.PlatformCredentials
	if len(creds) == 0 && cfg.Dev {
		if creds, err = devOperator(opts.DevOutput); err != nil {
			return nil, err
		}
	}
	clients, err := platformClients(creds)
	if err != nil {
		return nil, err
	}
	clock := app.Clock(opts.Now)
	tokens, err := app.NewTokens(st, issuer, subjects, clients, clock)
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	events, err := app.NewEvents(st)
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	r.saga = sagaDeps{store: st, issuer: issuer, deadline: cfg.OffboardDeadline, forget: tenantStatus.Forget, logger: logger}
	deps := server.Deps{
		Events:          events,
		Tenants:         app.NewTenants(st, clock, app.Hooks{StatusChanged: r.statusChanged, Onboard: r.onboard}),
		Members:         app.NewMembers(st),
		ServiceAccounts: app.NewServiceAccounts(st, clock),
		Tokens:          tokens,
		Keys:            keys,
	}

	limiter, err := ratelimit.New(ratelimit.Config{Rate: rate.Limit(cfg.RateLimit), Burst: cfg.RateBurst})
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	gs, err := grpcserver.New(grpcserver.Config{
		Logger: logger, Verifier: verifier, Policy: server.Policy(), RateLimiter: limiter,
	})
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	if err := server.Register(gs, deps); err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	if err := gs.CheckPolicy(); err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}

	jwks, err := token.NewJWKSHandler(keys, token.JWKSHandlerConfig{Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle(token.JWKSPath, jwks)
	mux.Handle("/healthz", healthz(db))

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
	r.JWKSURL = "http://" + r.HTTPAddr + token.JWKSPath

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.cancel, r.runCtx = cancel, runCtx
	// Runs before the database closes (closers run last first): the saga's worker is done
	// with it by then.
	r.closers = append(r.closers, r.sagaRunning.Wait)
	httpSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
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
		first := <-errc // one server ended (or runCtx was cancelled and the gRPC server stopped)
		errs = append(errs, first)
		cancel()
		shutdownCtx, stop := context.WithTimeout(context.Background(), 10*time.Second)
		errs = append(errs, httpSrv.Shutdown(shutdownCtx))
		stop()
		errs = append(errs, <-errc)
		r.closeAll()
		r.err = errors.Join(errs...)
		close(r.done)
	}()
	if cfg.VaultBrokerAddr != "" {
		if err := r.StartLifecycle(LifecycleTargets{VaultBrokerAddr: cfg.VaultBrokerAddr, ConnectionAddr: cfg.ConnectionAddr, SyncAddr: cfg.SyncAddr}); err != nil {
			cancel()
			return nil, err
		}
	} else if !opts.DeferLifecycle {
		logger.WarnContext(ctx, "tenant lifecycle saga not started: "+config.EnvVaultBrokerAddr+", "+config.EnvConnectionAddr+" and "+config.EnvSyncAddr+
			" are unset, so new tenants are not provisioned in Vault and deleted tenants are not offboarded (GetTenant shows the pending step)")
	}
	logger.InfoContext(ctx, "identity started", "grpc_addr", r.GRPCAddr, "http_addr", r.HTTPAddr, "config", cfg)
	return r, nil
}

// Done is closed once identity has stopped (after Close, or when a server failed).
func (r *Running) Done() <-chan struct{} { return r.done }

// Wait blocks until identity has stopped and returns why it stopped (nil after a requested
// shutdown).
func (r *Running) Wait() error {
	<-r.done
	return r.err
}

// Close stops identity gracefully and waits for it.
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

func kek(cfg Config, logger *slog.Logger) (token.KEK, error) {
	if cfg.KeyEncryptionKey == "" {
		// Validate allowed this only in Dev mode.
		return token.GenerateDevKEK(logger)
	}
	k, err := token.ParseKEK(cfg.KeyEncryptionKey.Reveal())
	if err != nil {
		return token.KEK{}, fmt.Errorf("launch: %s: %w", config.EnvKeyEncryptionKey, err)
	}
	return k, nil
}

func newVerifier(cfg Config, keys *token.Keyring, tenants *authn.CachedTenantStatus, audience string) (*authn.Verifier, error) {
	v, err := authn.NewVerifier(authn.VerifierConfig{
		Issuer: cfg.Issuer, Audience: audience, Keys: keys, Tenants: tenants, TenantStatusTTL: cfg.TenantStatusTTL,
	})
	if err != nil {
		return nil, fmt.Errorf("launch: verifier for %s: %w", audience, err)
	}
	return v, nil
}

// subjectVerifier verifies ExchangeToken's subject tokens, which may be for any Bulkhead
// audience: a service exchanges the token its own caller presented to it. authn.Verifier checks
// exactly one audience, so there is one per audience, tried in turn; every check but the
// audience is the same in each.
type subjectVerifier []*authn.Verifier

func newSubjectVerifier(cfg Config, keys *token.Keyring, tenants *authn.CachedTenantStatus) (subjectVerifier, error) {
	var out subjectVerifier
	for _, aud := range app.AllAudiences {
		v, err := newVerifier(cfg, keys, tenants, aud)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

func (s subjectVerifier) Verify(ctx context.Context, tok string) (*claims.Claims, error) {
	var errs []error
	for _, v := range s {
		c, err := v.Verify(ctx, tok)
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
	}
	// Any verifier's error says why; they differ only in the audience. A suspended tenant or
	// an outage is reported as such by each (the signature and audience passed for one).
	for _, err := range errs {
		if apierr.Is(err, apierr.ReasonTenantSuspended) || apierr.Is(err, apierr.ReasonUnavailable) {
			return nil, err
		}
	}
	return nil, errors.Join(errs...)
}

func platformClients(creds []PlatformCredential) ([]app.PlatformClient, error) {
	out := make([]app.PlatformClient, 0, len(creds))
	for _, pc := range creds {
		raw, err := hex.DecodeString(pc.SecretSHA256)
		if err != nil || len(raw) != sha256.Size {
			return nil, fmt.Errorf("launch: platform credential %q: bad secret_sha256", pc.ClientID)
		}
		c := app.PlatformClient{ClientID: pc.ClientID, Kind: claims.Kind(pc.Kind), Scopes: pc.Scopes}
		copy(c.SecretSHA256[:], raw)
		out = append(out, c)
	}
	return out, nil
}

// devOperator generates an operator credential for development and prints it once to w. It is
// printed, not logged: logs are collected and kept, and this is a secret.
func devOperator(w io.Writer) ([]PlatformCredential, error) {
	if w == nil {
		w = os.Stderr
	}
	pc, secret, err := NewPlatformCredential(KindOperator, "dev-operator", authz.PlatformTenantsRead, authz.PlatformTenantsManage)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(w, "identity (dev): platform operator credential, shown once: client_id=%s client_secret=%s\n", pc.ClientID, secret)
	return []PlatformCredential{pc}, nil
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
