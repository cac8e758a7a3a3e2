// Package store is the sync service's Postgres storage: syncs with the position of the run in
// progress, the synced records with their change feed, and their run bookkeeping. Every
// function runs in a caller's transaction (a pgtenant tenant transaction, so row-level security
// confines it to one tenant) because the engine commits River job changes in the same
// transaction; the tenant id is passed as well so that every query can use its index.
//
// Contract for callers: a sync or record of another tenant is indistinguishable from a missing
// one (ErrNotFound); functions that change a run check that the run is still the current one
// (ErrRunSuperseded) and that the sync is active (ErrPaused), under the sync row's lock.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Errors callers branch on.
var (
	// ErrNotFound: no such sync in this tenant.
	ErrNotFound = errors.New("store: not found")
	// ErrRunSuperseded: the run a worker holds is no longer the sync's current run (another
	// worker finished or restarted it). The worker must stop without writing.
	ErrRunSuperseded = errors.New("store: run superseded")
	// ErrPaused: the sync was paused; the run stops after its last committed page.
	ErrPaused = errors.New("store: sync paused")
	// ErrIntegrationMismatch: the sync of this connection and model uses another integration.
	ErrIntegrationMismatch = errors.New("store: sync exists with another integration")
)

// Tx is what the store needs of a transaction; pgx.Tx satisfies it.
type Tx interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// Mode is how a sync's runs fetch records.
type Mode string

// Modes.
const (
	ModeFull        Mode = "full"
	ModeIncremental Mode = "incremental"
)

// State is whether a sync is scheduled.
type State string

// States.
const (
	StateActive State = "active"
	StatePaused State = "paused"
)

// RunStatus is a run's outcome.
type RunStatus string

// Run statuses; RunNone before the first run.
const (
	RunNone      RunStatus = "none"
	RunRunning   RunStatus = "running"
	RunSucceeded RunStatus = "succeeded"
	RunFailed    RunStatus = "failed"
)

// Run is one run's bookkeeping.
type Run struct {
	Number     int64
	Status     RunStatus
	Full       bool
	Added      int64
	Updated    int64
	Deleted    int64
	Pages      int64
	StartedAt  *time.Time
	FinishedAt *time.Time
}

// Position is where a run in progress stands: what a resumed worker continues from.
type Position struct {
	// Since is the incremental lower bound fixed at the run's start; nil fetches everything.
	Since *time.Time
	// PageCursor is the provider position of the next page; "" for the first.
	PageCursor string
	// HighWater is the newest provider updated-at committed by this run so far.
	HighWater *time.Time
}

// Sync is one sync and its runs.
type Sync struct {
	TenantID     string
	ID           string
	ConnectionID string
	Integration  string
	Model        string
	Mode         Mode
	Frequency    time.Duration
	State        State
	Checkpoint   *time.Time
	// Run is the latest run: in progress when Run.Status is RunRunning.
	Run      Run
	Position Position
	// Last is the last finished run (Number 0 before any).
	Last       Run
	LastError  string
	FullResync bool
	NextRunAt  *time.Time
	JobID      *int64
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// Running reports whether a run is in progress.
func (s *Sync) Running() bool { return s.Run.Status == RunRunning }

const syncColumns = `tenant_id::text, id::text, connection_id::text, integration, model, mode, frequency_secs,
	state, checkpoint, run_number, run_status, run_full, run_since, coalesce(run_page_cursor, ''), run_high_water,
	run_added, run_updated, run_deleted, run_pages, run_started_at, run_finished_at,
	last_number, last_status, last_full, last_added, last_updated, last_deleted, last_pages,
	last_started_at, last_finished_at, last_error, full_resync, next_run_at, job_id, created_at, updated_at`

func scanSync(row pgx.Row) (*Sync, error) {
	var s Sync
	var freq int32
	err := row.Scan(&s.TenantID, &s.ID, &s.ConnectionID, &s.Integration, &s.Model, &s.Mode, &freq,
		&s.State, &s.Checkpoint, &s.Run.Number, &s.Run.Status, &s.Run.Full, &s.Position.Since,
		&s.Position.PageCursor, &s.Position.HighWater,
		&s.Run.Added, &s.Run.Updated, &s.Run.Deleted, &s.Run.Pages, &s.Run.StartedAt, &s.Run.FinishedAt,
		&s.Last.Number, &s.Last.Status, &s.Last.Full, &s.Last.Added, &s.Last.Updated, &s.Last.Deleted,
		&s.Last.Pages, &s.Last.StartedAt, &s.Last.FinishedAt, &s.LastError, &s.FullResync, &s.NextRunAt,
		&s.JobID, &s.CreatedAt, &s.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	s.Frequency = time.Duration(freq) * time.Second
	return &s, nil
}
