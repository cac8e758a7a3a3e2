package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"github.com/bulkhead/bulkhead/pkg/authn"
	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/services/sync/internal/fetch"
	"github.com/bulkhead/bulkhead/services/sync/internal/seal"
	"github.com/bulkhead/bulkhead/services/sync/internal/store"
	"github.com/bulkhead/bulkhead/services/sync/internal/webhook"
)

// seal hashes each record's plaintext with the service's key, then replaces its sensitive
// fields by the tenant's ciphertext (one broker call per record, a bounded number at once).
func (e *Engine) seal(ctx context.Context, tenantID string, fields []string, recs []store.PageRecord) error {
	payloads := make([][]byte, len(recs))
	for i := range recs {
		recs[i].Hash = seal.Hash(e.cfg.HashKey, recs[i].Payload)
		payloads[i] = recs[i].Payload
	}
	if err := seal.SealAll(ctx, e.cfg.Cipher, tenantID, fields, payloads); err != nil {
		return fmt.Errorf("engine: sealing sensitive fields: %w", err)
	}
	for i := range recs {
		recs[i].Payload = payloads[i]
	}
	return nil
}

// errTenantInactive cancels the jobs of a suspended or deleted tenant.
var errTenantInactive = errors.New("engine: tenant is suspended or deleted")

// parkFor is how long a suspended tenant's sync waits before its status is asked again.
const parkFor = time.Hour

type runWorker struct {
	river.WorkerDefaults[RunArgs]
	e *Engine
}

// Work runs (or resumes) one run of a sync.
func (w *runWorker) Work(ctx context.Context, job *river.Job[RunArgs]) error {
	e, a := w.e, job.Args
	log := e.log.With("tenant_id", a.TenantID, "connection_id", a.ConnectionID, "model", a.Model, "job_id", job.ID)
	if e.cfg.Tenants != nil {
		state, err := e.cfg.Tenants.TenantState(ctx, a.TenantID)
		if err != nil {
			return fmt.Errorf("engine: tenant status: %w", err)
		}
		if state != authn.StateActive {
			// Park the sync so the reconciler does not bring the job back every pass; it
			// comes due again after a frequency (or at once on ResumeSync/TriggerSync).
			wctx, stop := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer stop()
			if err := e.db.InTx(wctx, pgtenant.Scope{TenantID: a.TenantID}, func(tx pgx.Tx) error {
				return store.Park(wctx, tx, a.TenantID, a.ConnectionID, a.Model, time.Now().Add(parkFor))
			}); err != nil {
				log.WarnContext(ctx, "parking a suspended tenant's sync", "error", err)
			}
			return river.JobCancel(errTenantInactive)
		}
	}
	release, ok := e.fair.acquire(a.TenantID)
	if !ok {
		return river.JobSnooze(jittered(e.cfg.FairnessSnooze))
	}
	defer release()

	scope := pgtenant.Scope{TenantID: a.TenantID}
	var s *store.Sync
	err := e.db.InTx(ctx, scope, func(tx pgx.Tx) error {
		cur, err := store.GetSync(ctx, tx, a.TenantID, a.ConnectionID, a.Model, true)
		if err != nil {
			return err
		}
		s, err = store.BeginRun(ctx, tx, cur, job.ID)
		return err
	})
	switch {
	case errors.Is(err, store.ErrPaused):
		return nil // nothing to do until ResumeSync schedules a new job
	case errors.Is(err, store.ErrNotFound), errors.Is(err, pgtenant.ErrNoTenant):
		return river.JobCancel(err)
	case err != nil:
		return e.interrupted(ctx, err)
	}
	def, ok := e.cfg.Definitions.Get(s.Integration, s.Model)
	if !ok {
		return e.fail(ctx, job, s, river.JobCancel(fmt.Errorf("engine: no sync definition for %s/%s", s.Integration, s.Model)))
	}
	sensitive := def.SensitiveFields
	if len(sensitive) > 0 && (e.cfg.Cipher == nil || len(e.cfg.HashKey) == 0) {
		// Never store a sensitive value in clear: the run waits for a configuration that can seal it.
		return e.fail(ctx, job, s, river.JobCancel(fmt.Errorf("engine: %s/%s: %w", s.Integration, s.Model, seal.ErrNoCipher)))
	}
	baseURL := def.BaseURL
	if baseURL == "" {
		baseURL = e.cfg.BaseURLs[s.Integration]
	}
	if baseURL == "" {
		return e.fail(ctx, job, s, river.JobCancel(fmt.Errorf("engine: no base URL configured for %s", s.Integration)))
	}
	token, err := e.cfg.Tokens.AccessToken(ctx, a.TenantID, a.ConnectionID)
	if err != nil {
		err = fmt.Errorf("engine: access token: %w", err)
		if errors.Is(err, ErrCredentialUnusable) {
			err = river.JobCancel(err)
		}
		return e.fail(ctx, job, s, err)
	}
	req := fetch.PageRequest{TenantID: a.TenantID, Def: def, BaseURL: baseURL, Token: token, Position: s.Position.PageCursor}
	if s.Position.Since != nil {
		req.Since = *s.Position.Since
	}
	run, pages := s.Run.Number, s.Run.Pages
	refreshed := false
	for {
		page, err := e.cfg.Fetcher.FetchPage(ctx, req)
		if fetch.Unauthorized(err) && !refreshed {
			// Tokens can expire or be revoked mid-run: ask for a fresh one, once.
			refreshed = true
			if r, ok := e.cfg.Tokens.(TokenRefresher); ok {
				req.Token, err = r.RefreshAccessToken(ctx, a.TenantID, a.ConnectionID, req.Token)
			} else {
				req.Token, err = e.cfg.Tokens.AccessToken(ctx, a.TenantID, a.ConnectionID)
			}
			if err == nil {
				continue
			}
			err = fmt.Errorf("engine: access token: %w", err)
			if errors.Is(err, ErrCredentialUnusable) {
				err = river.JobCancel(err)
			}
		}
		if err != nil {
			var rl *fetch.RateLimitedError
			var bo *fetch.BreakerOpenError
			switch {
			case errors.As(err, &rl):
				e.note(ctx, s, err)
				return river.JobSnooze(rl.RetryAfter)
			case errors.As(err, &bo):
				e.note(ctx, s, err)
				return river.JobSnooze(jittered(bo.RetryAfter))
			case ctx.Err() != nil:
				return e.interrupted(ctx, err)
			}
			return e.fail(ctx, job, s, err)
		}
		recs := make([]store.PageRecord, len(page.Records))
		for i, r := range page.Records {
			recs[i] = store.PageRecord{ExternalID: r.ExternalID, Payload: r.Payload, UpdatedAt: r.UpdatedAt}
		}
		if len(sensitive) > 0 {
			if err := e.seal(ctx, a.TenantID, sensitive, recs); err != nil {
				if ctx.Err() != nil {
					return e.interrupted(ctx, err)
				}
				return e.fail(ctx, job, s, err)
			}
		}
		last := page.Next == ""
		err = e.db.InTx(ctx, scope, func(tx pgx.Tx) error {
			res, err := store.ApplyPage(ctx, tx, a.TenantID, s.ID, run, recs, page.Next)
			if err != nil {
				return err
			}
			ev := ChangeEvent{SyncID: s.ID, ConnectionID: s.ConnectionID, Model: s.Model, Run: run,
				Added: res.Added, Updated: res.Updated}
			lastSeq := res.LastSeq
			if last {
				fin, err := e.finish(ctx, tx, job, s)
				if err != nil {
					return err
				}
				ev.Deleted, lastSeq = fin.Deleted, max(lastSeq, fin.LastSeq)
				if err := e.emit(ctx, tx, a.TenantID, webhook.EventSyncCompleted, RunEvent{
					SyncID: s.ID, ConnectionID: s.ConnectionID, Integration: s.Integration, Model: s.Model,
					Run: run, Full: fin.Run.Full, Added: fin.Run.Added, Updated: fin.Run.Updated,
					Deleted: fin.Run.Deleted, Pages: fin.Run.Pages,
				}); err != nil {
					return err
				}
			}
			if lastSeq == 0 {
				return nil
			}
			ev.Cursor = store.EncodeCursor(lastSeq)
			if err := e.emit(ctx, tx, a.TenantID, webhook.EventRecordsChanged, ev); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", NotifyChannel, a.TenantID); err != nil {
				return fmt.Errorf("engine: notify: %w", err)
			}
			return nil
		})
		switch {
		case errors.Is(err, store.ErrPaused), errors.Is(err, store.ErrRunSuperseded):
			log.InfoContext(ctx, "sync run stopped", "reason", err)
			return nil
		case err != nil:
			if ctx.Err() != nil {
				return e.interrupted(ctx, err)
			}
			return e.fail(ctx, job, s, err)
		}
		pages++
		if h := e.cfg.Hooks.PageCommitted; h != nil {
			h(ctx, a.TenantID, s.ID, run, pages)
		}
		if last {
			if h := e.cfg.Hooks.RunFinished; h != nil {
				h(a.TenantID, s.ID, run)
			}
			return nil
		}
		req.Position = page.Next
	}
}

// finish ends the run in tx after its last page: delete detection for full runs, the next
// job scheduled at the next run time. It completes this job inside tx first: the next job has
// the same unique key, and a running job would make River skip it as a duplicate.
func (e *Engine) finish(ctx context.Context, tx pgx.Tx, job *river.Job[RunArgs], s *store.Sync) (store.FinishResult, error) {
	next := time.Now().Add(s.Frequency)
	fin, err := store.FinishRun(ctx, tx, s.TenantID, s.ID, s.Run.Number, next)
	if err != nil {
		return fin, err
	}
	if _, err := river.JobCompleteTx[*riverpgxv5.Driver](ctx, tx, job); err != nil {
		return fin, fmt.Errorf("engine: complete job: %w", err)
	}
	prio, err := e.priority(ctx, tx, s.TenantID, next)
	if err != nil {
		return fin, err
	}
	res, err := e.river.InsertTx(ctx, tx, job.Args, &river.InsertOpts{ScheduledAt: next, Priority: prio})
	if err != nil {
		return fin, fmt.Errorf("engine: schedule next run: %w", err)
	}
	if err := store.SetJob(ctx, tx, s.TenantID, s.ID, res.Job.ID, next); err != nil {
		return fin, err
	}
	return fin, nil
}

// interrupted handles a run whose context ended. Cancelled remotely (PauseSync): River marks
// the job cancelled. Stopped (shutdown, Kill): the job is made available again at once, so
// the next worker resumes after the last committed page without spending an attempt.
func (e *Engine) interrupted(ctx context.Context, err error) error {
	if errors.Is(context.Cause(ctx), rivertype.ErrJobCancelledRemotely) {
		return err
	}
	if ctx.Err() != nil {
		return river.JobSnooze(0)
	}
	return err
}

// fail records a failed attempt in the sync (its last error; on the last attempt, or for a
// cancelling error, the run ends as failed, without delete detection) and returns err for
// River to retry with backoff or to give up.
func (e *Engine) fail(ctx context.Context, job *river.Job[RunArgs], s *store.Sync, err error) error {
	var cancel *rivertype.JobCancelError
	final := job.Attempt >= job.MaxAttempts || errors.As(err, &cancel)
	// Record even when ctx is ending: the failure must be visible in GetSyncStatus.
	wctx, stop := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer stop()
	recErr := e.db.InTx(wctx, pgtenant.Scope{TenantID: s.TenantID}, func(tx pgx.Tx) error {
		if err := store.FailRun(wctx, tx, s.TenantID, s.ID, s.Run.Number, errorText(err), final, time.Now().Add(s.Frequency)); err != nil || !final {
			return err
		}
		cur, err2 := store.GetSync(wctx, tx, s.TenantID, s.ConnectionID, s.Model, false)
		if err2 != nil {
			return err2
		}
		return e.emit(wctx, tx, s.TenantID, webhook.EventSyncFailed, RunEvent{
			SyncID: s.ID, ConnectionID: s.ConnectionID, Integration: s.Integration, Model: s.Model,
			Run: cur.Last.Number, Full: cur.Last.Full, Added: cur.Last.Added, Updated: cur.Last.Updated,
			Pages: cur.Last.Pages, Error: errorText(err),
		})
	})
	if recErr != nil {
		e.log.ErrorContext(ctx, "recording a failed sync run", "sync_id", s.ID, "error", recErr)
	}
	e.log.WarnContext(ctx, "sync run attempt failed", "tenant_id", s.TenantID, "sync_id", s.ID,
		"run", s.Run.Number, "attempt", job.Attempt, "final", final, "error", err)
	return err
}

// note records err as the sync's last error without failing the run (a snooze).
func (e *Engine) note(ctx context.Context, s *store.Sync, err error) {
	wctx, stop := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer stop()
	_ = e.db.InTx(wctx, pgtenant.Scope{TenantID: s.TenantID}, func(tx pgx.Tx) error {
		return store.FailRun(wctx, tx, s.TenantID, s.ID, s.Run.Number, errorText(err), false, time.Time{})
	})
}

// errorText is what GetSyncStatus shows: provider statuses and our own messages, never
// request URLs or credentials (fetch strips URLs from client errors).
func errorText(err error) string {
	var cancel *rivertype.JobCancelError
	if errors.As(err, &cancel) && cancel.Unwrap() != nil {
		err = cancel.Unwrap()
	}
	return err.Error()
}
