package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/services/sync/internal/store"
)

// StartSpec is what StartSync asks for; zero Mode and Frequency take the definition's defaults.
type StartSpec struct {
	ConnectionID string
	Integration  string
	Model        string
	Mode         store.Mode
	Frequency    time.Duration
}

// StartSync creates or updates the sync and schedules a run now, in one transaction.
// Errors: apierr InvalidArgument for an unknown definition, an unsupported mode, or an
// existing sync of the connection's model with another integration.
func (e *Engine) StartSync(ctx context.Context, scope pgtenant.Scope, spec StartSpec) (*store.Sync, error) {
	def, ok := e.cfg.Definitions.Get(spec.Integration, spec.Model)
	if !ok {
		return nil, apierr.InvalidArgument("model", "no sync definition for integration %q and model %q", spec.Integration, spec.Model)
	}
	switch spec.Mode {
	case "":
		spec.Mode = store.ModeFull
		if def.SupportsIncremental() {
			spec.Mode = store.ModeIncremental
		}
	case store.ModeIncremental:
		if !def.SupportsIncremental() {
			return nil, apierr.InvalidArgument("mode", "%s/%s has no incremental filter: use full syncs", spec.Integration, spec.Model)
		}
	}
	if spec.Frequency == 0 {
		spec.Frequency = def.DefaultFreq
	}
	var out *store.Sync
	err := e.db.InTx(ctx, scope, func(tx pgx.Tx) error {
		s, err := store.UpsertSync(ctx, tx, scope.TenantID, store.SyncSpec{
			ConnectionID: spec.ConnectionID, Integration: spec.Integration, Model: spec.Model,
			Mode: spec.Mode, Frequency: spec.Frequency,
		})
		if errors.Is(err, store.ErrIntegrationMismatch) {
			return apierr.InvalidArgument("integration", "the connection's %s sync uses another integration", spec.Model)
		}
		if err != nil {
			return err
		}
		out, err = e.scheduleNow(ctx, tx, s)
		return err
	})
	return out, err
}

// scheduleNow inserts the sync's job to run now (or finds the one already waiting or running)
// and makes a job scheduled for later run now.
func (e *Engine) scheduleNow(ctx context.Context, tx pgx.Tx, s *store.Sync) (*store.Sync, error) {
	prio, err := e.priority(ctx, tx, s.TenantID, time.Now())
	if err != nil {
		return nil, err
	}
	res, err := e.river.InsertTx(ctx, tx, RunArgs{TenantID: s.TenantID, ConnectionID: s.ConnectionID, Model: s.Model},
		&river.InsertOpts{Priority: prio})
	if err != nil {
		return nil, fmt.Errorf("engine: insert job: %w", err)
	}
	job := res.Job
	if res.UniqueSkippedAsDuplicate && job.State != rivertype.JobStateRunning && job.ScheduledAt.After(time.Now()) {
		if job, err = e.river.JobRetryTx(ctx, tx, job.ID); err != nil {
			return nil, fmt.Errorf("engine: advance job: %w", err)
		}
	}
	now := time.Now()
	if err := store.SetJob(ctx, tx, s.TenantID, s.ID, job.ID, now); err != nil {
		return nil, err
	}
	return store.GetSync(ctx, tx, s.TenantID, s.ConnectionID, s.Model, false)
}

// priority weighs a tenant's new job by the tenant's due backlog: River fetches lower
// priority numbers first, so the job of a tenant with a few due syncs overtakes the queue of a
// tenant with thousands (within a priority, jobs run in schedule order). Tiers: up to the
// tenant's concurrency cap, 10x, 100x, more. Measured by BenchmarkNoisyNeighbour: without
// it, a tenant with one sync waited 10x longer behind a tenant with 200 busy ones.
func (e *Engine) priority(ctx context.Context, tx pgx.Tx, tenantID string, at time.Time) (int, error) {
	limit := e.cfg.TenantConcurrency
	n, err := store.DueCount(ctx, tx, tenantID, at, limit*100+1)
	if err != nil {
		return 0, err
	}
	switch {
	case n <= limit:
		return 1, nil
	case n <= limit*10:
		return 2, nil
	case n <= limit*100:
		return 3, nil
	}
	return 4, nil
}

// PauseSync pauses the sync and cancels its job; a run in progress stops after its page (the
// worker checks the state under the sync's lock before committing each page). Idempotent.
func (e *Engine) PauseSync(ctx context.Context, scope pgtenant.Scope, connectionID, model string) (*store.Sync, error) {
	var out *store.Sync
	err := e.db.InTx(ctx, scope, func(tx pgx.Tx) error {
		s, err := store.GetSync(ctx, tx, scope.TenantID, connectionID, model, true)
		if err != nil {
			return notFound(err)
		}
		if s.JobID != nil {
			// A running job is cancelled remotely (its context ends); a waiting one never runs.
			if _, err := e.river.JobCancelTx(ctx, tx, *s.JobID); err != nil && !errors.Is(err, river.ErrNotFound) {
				return fmt.Errorf("engine: cancel job: %w", err)
			}
		}
		out, err = store.SetState(ctx, tx, scope.TenantID, s.ID, store.StatePaused)
		return err
	})
	return out, err
}

// ResumeSync activates a paused sync and schedules a run now; an interrupted run resumes from
// its last committed page. Idempotent.
func (e *Engine) ResumeSync(ctx context.Context, scope pgtenant.Scope, connectionID, model string) (*store.Sync, error) {
	var out *store.Sync
	err := e.db.InTx(ctx, scope, func(tx pgx.Tx) error {
		s, err := store.GetSync(ctx, tx, scope.TenantID, connectionID, model, true)
		if err != nil {
			return notFound(err)
		}
		if s.State == store.StateActive {
			out = s
			return nil
		}
		if s, err = store.SetState(ctx, tx, scope.TenantID, s.ID, store.StateActive); err != nil {
			return err
		}
		out, err = e.scheduleNow(ctx, tx, s)
		return err
	})
	return out, err
}

// TriggerSync runs an active sync now; fullResync makes the next run full. Errors: NotFound,
// FailedPrecondition for a paused sync.
func (e *Engine) TriggerSync(ctx context.Context, scope pgtenant.Scope, connectionID, model string, fullResync bool) (*store.Sync, error) {
	var out *store.Sync
	err := e.db.InTx(ctx, scope, func(tx pgx.Tx) error {
		s, err := store.GetSync(ctx, tx, scope.TenantID, connectionID, model, true)
		if err != nil {
			return notFound(err)
		}
		if s.State != store.StateActive {
			return apierr.FailedPrecondition("SYNC_PAUSED", "the sync is paused: resume it first")
		}
		if fullResync {
			if err := store.RequestFullResync(ctx, tx, scope.TenantID, s.ID); err != nil {
				return err
			}
		}
		out, err = e.scheduleNow(ctx, tx, s)
		return err
	})
	return out, err
}

func notFound(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return apierr.NotFound("sync").WithCause(err)
	}
	return err
}

type reconcileWorker struct {
	river.WorkerDefaults[ReconcileArgs]
	e *Engine
}

// reconcileBatch bounds one reconciler pass; the next pass picks up the rest.
const reconcileBatch = 500

// Work inserts a job for every active sync that is due and has no live job.
func (w *reconcileWorker) Work(ctx context.Context, _ *river.Job[ReconcileArgs]) error {
	e := w.e
	var due []store.Due
	err := e.db.InPlatformTx(ctx, func(tx pgx.Tx) error {
		var err error
		due, err = store.DueSyncs(ctx, tx, time.Now(), reconcileBatch)
		return err
	})
	if err != nil {
		return fmt.Errorf("engine: reconcile: %w", err)
	}
	for _, d := range due {
		err := e.db.InTx(ctx, pgtenant.Scope{TenantID: d.TenantID}, func(tx pgx.Tx) error {
			s, err := store.GetSync(ctx, tx, d.TenantID, d.ConnectionID, d.Model, true)
			if err != nil || s.State != store.StateActive {
				return err
			}
			_, err = e.scheduleNow(ctx, tx, s)
			return err
		})
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			e.log.ErrorContext(ctx, "reconcile: scheduling a due sync", "tenant_id", d.TenantID, "error", err)
		}
	}
	return nil
}
