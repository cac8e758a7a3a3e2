// Package engine schedules and runs syncs on River (Postgres-backed jobs, riverpgxv5): one
// unique job per (tenant, connection, model), each run paging through the provider with the
// sync's definition and committing every page with its position, so a worker that dies or stops
// resumes after the last committed page. It also holds the commands that change a sync's
// schedule (start, pause, resume, trigger), because they change River jobs in the same
// transaction as the sync row.
//
// Scheduling: a run that finishes inserts the sync's next job, scheduled at its next run time,
// in the transaction that commits its last page (after completing its own job there, so the
// unique job does not collide with itself). A River periodic job (the reconciler) repairs what
// that cannot cover — a run that failed for good, a job lost to a race with PauseSync and
// ResumeSync — by inserting jobs for active syncs that are due and have no live job.
//
// Fairness: River's queue has MaxWorkers slots shared by all tenants; a tenant may hold at most
// TenantConcurrency of them in this process. A job of a tenant at its cap snoozes (which does
// not count as an attempt) and gives its slot to the next tenant's job. Outbound calls go
// through package fetch's per-(tenant, provider) token bucket and circuit breaker.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"github.com/bulkhead/bulkhead/pkg/authn"
	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/services/sync/internal/definition"
	"github.com/bulkhead/bulkhead/services/sync/internal/fetch"
	"github.com/bulkhead/bulkhead/services/sync/internal/seal"
	"github.com/bulkhead/bulkhead/services/sync/internal/webhook"
)

// Queue is the River queue sync runs are worked from.
const Queue = "sync"

// NotifyChannel is the Postgres channel a committed change is announced on (payload: the
// tenant id), for WatchChanges.
const NotifyChannel = "bulkhead_sync_changes"

// AccessTokens supplies a connection's credential for a run. The production implementation
// calls the connection service's GetAccessToken; the engine asks once per run (and again after
// the provider answers 401) and never stores the credential.
type AccessTokens interface {
	AccessToken(ctx context.Context, tenantID, connectionID string) (string, error)
}

// TokenRefresher is implemented by AccessTokens that can force a new credential after the
// provider refused one (401); without it the engine just asks AccessToken again.
type TokenRefresher interface {
	RefreshAccessToken(ctx context.Context, tenantID, connectionID, rejected string) (string, error)
}

// ErrCredentialUnusable is wrapped by AccessTokens errors that retrying will not fix (the
// connection was revoked, disabled, needs re-authorization, or does not exist): the run fails
// at once and the sync tries again at its next run time.
var ErrCredentialUnusable = errors.New("engine: the connection's credential is unusable")

// AccessTokensFunc adapts a function to AccessTokens.
type AccessTokensFunc func(ctx context.Context, tenantID, connectionID string) (string, error)

// AccessToken calls f.
func (f AccessTokensFunc) AccessToken(ctx context.Context, tenantID, connectionID string) (string, error) {
	return f(ctx, tenantID, connectionID)
}

// Config configures an Engine. Pool, Definitions, Fetcher and Tokens are required; zero values
// take the defaults in brackets.
type Config struct {
	// Pool connects as the service's app role; River and the tenant transactions share it.
	Pool        *pgxpool.Pool
	Definitions *definition.Set
	Fetcher     *fetch.Client
	Tokens      AccessTokens
	// BaseURLs gives the base URL of integrations whose definition has none (test providers).
	BaseURLs map[string]string
	// Tenants, if set, is asked before each run: a suspended or deleted tenant's job is
	// cancelled (the kill switch reaches background work, not only API calls).
	Tenants authn.TenantStatus
	Logger  *slog.Logger
	// MaxWorkers is how many runs this process works at once [20].
	MaxWorkers int
	// TenantConcurrency is how many of them one tenant may hold [4].
	TenantConcurrency int
	// FairnessSnooze is how long a job of a tenant at its cap waits before trying again,
	// jittered ±50% [1s].
	FairnessSnooze time.Duration
	// FetchCooldown and FetchPollInterval tune River's producer [20ms, 250ms]: River's
	// defaults (100ms, 1s) cap processing near 1k jobs/s and add up to a second of latency
	// when LISTEN/NOTIFY is unavailable.
	FetchCooldown     time.Duration
	FetchPollInterval time.Duration
	// ReconcileInterval is how often the reconciler looks for due syncs without a job [1m].
	ReconcileInterval time.Duration
	// JobTimeout bounds one run [30m]; RescueStuckJobsAfter is when River gives a running job
	// whose worker vanished to another worker [JobTimeout + 15m].
	JobTimeout           time.Duration
	RescueStuckJobsAfter time.Duration
	// MaxAttempts before a run fails for good [12]; RetryPolicy spaces the attempts [River's
	// default: exponential backoff, attempt^4 seconds, with jitter].
	MaxAttempts int
	RetryPolicy river.ClientRetryPolicy
	// SoftStopTimeout is how long Stop waits for runs to finish their page before cancelling
	// them [10s]; cancelled runs are made available again at once and resume from their last
	// committed page.
	SoftStopTimeout time.Duration
	// Webhooks, if set, receives sync events into its outbox (in the transactions that cause
	// them) and works its deliveries on River's Queue webhook.Queue with WebhookWorkers [10].
	Webhooks *webhook.Dispatcher
	// Cipher seals the sensitive fields of models that list some (the vault-broker), and
	// HashKey keys their content hashes (seal.Hash). Without both, runs of such models are
	// cancelled: their values are never stored in clear.
	Cipher         seal.Cipher
	HashKey        []byte
	WebhookWorkers int
	// Hooks are test signals; nil fields are skipped.
	Hooks Hooks
}

// Hooks let tests wait on events instead of sleeping.
type Hooks struct {
	// PageCommitted runs in the worker after a page's transaction committed, with the job's
	// context (a test can block on it to hold a run between two pages).
	PageCommitted func(ctx context.Context, tenantID, syncID string, run, page int64)
	// RunFinished runs after a run's last page committed.
	RunFinished func(tenantID, syncID string, run int64)
}

func (c *Config) defaults() error {
	switch {
	case c.Pool == nil:
		return errors.New("engine: Config.Pool is required")
	case c.Definitions == nil:
		return errors.New("engine: Config.Definitions is required")
	case c.Fetcher == nil:
		return errors.New("engine: Config.Fetcher is required")
	case c.Tokens == nil:
		return errors.New("engine: Config.Tokens is required")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.MaxWorkers <= 0 {
		c.MaxWorkers = 20
	}
	if c.TenantConcurrency <= 0 {
		c.TenantConcurrency = 4
	}
	if c.FairnessSnooze <= 0 {
		c.FairnessSnooze = time.Second
	}
	if c.FetchCooldown <= 0 {
		c.FetchCooldown = 20 * time.Millisecond
	}
	if c.FetchPollInterval <= 0 {
		c.FetchPollInterval = 250 * time.Millisecond
	}
	if c.ReconcileInterval <= 0 {
		c.ReconcileInterval = time.Minute
	}
	if c.JobTimeout <= 0 {
		c.JobTimeout = 30 * time.Minute
	}
	if c.RescueStuckJobsAfter <= c.JobTimeout {
		c.RescueStuckJobsAfter = c.JobTimeout + 15*time.Minute
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 12
	}
	if c.SoftStopTimeout <= 0 {
		c.SoftStopTimeout = 10 * time.Second
	}
	if c.WebhookWorkers <= 0 {
		c.WebhookWorkers = 10
	}
	return nil
}

// Engine runs syncs. Start it once; Stop it once.
type Engine struct {
	cfg   Config
	db    *pgtenant.DB
	river *river.Client[pgx.Tx]
	fair  *fairness
	log   *slog.Logger
}

// liveStates are the job states in which a sync's job counts as scheduled or running: the
// unique key of a sync's job is enforced across them. completed, cancelled and discarded jobs
// do not block the next one.
var liveStates = []rivertype.JobState{
	rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateRunning,
	rivertype.JobStateRetryable, rivertype.JobStateScheduled,
}

// RunArgs are a sync job's arguments: ids only, never records or credentials (River's table
// has no row-level security).
type RunArgs struct {
	TenantID     string `json:"tenant_id" river:"unique"`
	ConnectionID string `json:"connection_id" river:"unique"`
	Model        string `json:"model" river:"unique"`
}

// Kind implements river.JobArgs.
func (RunArgs) Kind() string { return "bulkhead_sync_run" }

// InsertOpts makes the job unique per (tenant, connection, model) while it waits or runs.
func (RunArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: Queue, UniqueOpts: river.UniqueOpts{ByArgs: true, ByState: liveStates}}
}

// ReconcileArgs are the reconciler's (periodic) job arguments.
type ReconcileArgs struct{}

// Kind implements river.JobArgs.
func (ReconcileArgs) Kind() string { return "bulkhead_sync_reconcile" }

// InsertOpts keeps at most one reconciler job waiting.
func (ReconcileArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: Queue, UniqueOpts: river.UniqueOpts{ByState: liveStates}}
}

// New builds an Engine (and its River client) without starting it.
func New(cfg Config) (*Engine, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	e := &Engine{
		cfg:  cfg,
		db:   pgtenant.New(cfg.Pool),
		fair: newFairness(cfg.TenantConcurrency),
		log:  cfg.Logger,
	}
	workers := river.NewWorkers()
	if err := river.AddWorkerSafely(workers, &runWorker{e: e}); err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	if err := river.AddWorkerSafely(workers, &reconcileWorker{e: e}); err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	queues := map[string]river.QueueConfig{Queue: {MaxWorkers: cfg.MaxWorkers}}
	if cfg.Webhooks != nil {
		if err := river.AddWorkerSafely(workers, cfg.Webhooks.Worker()); err != nil {
			return nil, fmt.Errorf("engine: %w", err)
		}
		queues[webhook.Queue] = river.QueueConfig{MaxWorkers: cfg.WebhookWorkers}
	}
	rc, err := river.NewClient(riverpgxv5.New(cfg.Pool), &river.Config{
		Queues:               queues,
		Workers:              workers,
		Logger:               cfg.Logger,
		FetchCooldown:        cfg.FetchCooldown,
		FetchPollInterval:    cfg.FetchPollInterval,
		JobTimeout:           cfg.JobTimeout,
		RescueStuckJobsAfter: cfg.RescueStuckJobsAfter,
		MaxAttempts:          cfg.MaxAttempts,
		RetryPolicy:          cfg.RetryPolicy,
		SoftStopTimeout:      cfg.SoftStopTimeout,
		// REINDEX needs ownership, which the app role deliberately lacks; reindexing River's
		// tables is an operator task run as the owner role.
		ReindexerSchedule: river.NeverSchedule(),
		PeriodicJobs: []*river.PeriodicJob{
			river.NewPeriodicJob(river.PeriodicInterval(cfg.ReconcileInterval),
				func() (river.JobArgs, *river.InsertOpts) { return ReconcileArgs{}, nil },
				&river.PeriodicJobOpts{RunOnStart: true, ID: "bulkhead_sync_reconcile"}),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("engine: river: %w", err)
	}
	e.river = rc
	return e, nil
}

// Start starts working jobs; it returns once River is running. ctx bounds the start-up only:
// stop the engine with Stop.
func (e *Engine) Start(ctx context.Context) error {
	if err := e.river.Start(context.WithoutCancel(ctx)); err != nil {
		return fmt.Errorf("engine: start: %w", err)
	}
	return nil
}

// Stop stops gracefully: no new runs start, runs in progress get SoftStopTimeout to finish
// their page, then are cancelled and made available again at once, to resume after their last
// committed page on the next worker. ctx bounds the whole stop.
func (e *Engine) Stop(ctx context.Context) error {
	return e.river.Stop(ctx)
}

// Kill cancels every run at once, as a crashing worker would leave them (minus the crash):
// what was committed stays, the page in flight is lost. For tests and emergencies.
func (e *Engine) Kill(ctx context.Context) error {
	return e.river.StopAndCancel(ctx)
}

// emit writes a webhook event in tx when webhooks are configured.
func (e *Engine) emit(ctx context.Context, tx pgx.Tx, tenantID, kind string, data any) error {
	if e.cfg.Webhooks == nil {
		return nil
	}
	_, err := e.cfg.Webhooks.Emit(ctx, tx, e.river, tenantID, webhook.Event{Kind: kind, Data: data})
	return err
}

// RunEvent is the data of sync.completed and sync.failed events.
type RunEvent struct {
	SyncID       string `json:"sync_id"`
	ConnectionID string `json:"connection_id"`
	Integration  string `json:"integration"`
	Model        string `json:"model"`
	Run          int64  `json:"run"`
	Full         bool   `json:"full"`
	Added        int64  `json:"added"`
	Updated      int64  `json:"updated"`
	Deleted      int64  `json:"deleted"`
	Pages        int64  `json:"pages"`
	Error        string `json:"error,omitempty"`
}

// ChangeEvent is the data of records.changed: counts, and the feed cursor just after the
// changes (pass it to ListRecords or WatchChanges).
type ChangeEvent struct {
	SyncID       string `json:"sync_id"`
	ConnectionID string `json:"connection_id"`
	Model        string `json:"model"`
	Run          int64  `json:"run"`
	Added        int64  `json:"added"`
	Updated      int64  `json:"updated"`
	Deleted      int64  `json:"deleted"`
	Cursor       string `json:"cursor"`
}

// River exposes the River client (for tests and the admin tooling).
func (e *Engine) River() *river.Client[pgx.Tx] { return e.river }

// DB is the tenant-scoped database the engine writes through.
func (e *Engine) DB() *pgtenant.DB { return e.db }

// fairness caps how many runs each tenant works at once in this process.
type fairness struct {
	limit int
	mu    sync.Mutex
	busy  map[string]int
}

func newFairness(limit int) *fairness { return &fairness{limit: limit, busy: map[string]int{}} }

func (f *fairness) acquire(tenant string) (release func(), ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.busy[tenant] >= f.limit {
		return nil, false
	}
	f.busy[tenant]++
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.busy[tenant]--; f.busy[tenant] <= 0 {
			delete(f.busy, tenant)
		}
	}, true
}

func jittered(d time.Duration) time.Duration {
	return d/2 + rand.N(d+1)
}
