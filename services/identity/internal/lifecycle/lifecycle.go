// Package lifecycle runs the tenant lifecycle saga: the steps of onboarding and offboarding a
// tenant that other services perform, driven from identity because identity owns tenants.
//
//	CreateTenant → vault.provision       the vault-broker creates the tenant's Vault layout
//	DeleteTenant → connections.offboard  the connection service revokes every connection at
//	                                     its provider (retried until none is pending, or
//	                                     given up once the offboarding deadline passed)
//	             → sync.purge            the sync service deletes the tenant's synced data
//	             → vault.deprovision     the vault-broker deletes the layout (crypto-shredding)
//	             → status deleted, tenant.deleted event
//
// The order is the point: a credential can be revoked at its provider only while it can still
// be read, so Vault goes last; and the tenant is DELETING, not DELETED, until then so that the
// connection service's tokens for it are still honoured (authn.StateDeleting).
//
// State lives on the tenant row (store.Lifecycle), changed only under that row's lock, so a
// DeleteTenant that replaces a pending step and a worker recording that step's outcome cannot
// both win. Every step is idempotent at its participant, so running one twice — a worker that
// died after the call but before recording it, two replicas — is harmless. A worker claims a
// step by pushing its due time out by a lease; a claim that is never recorded simply comes due
// again.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/status"

	"github.com/bulkhead/bulkhead/services/identity/internal/store"
)

// Vault is the vault-broker's part of the saga.
type Vault interface {
	// ProvisionTenant creates the tenant's Vault layout; idempotent.
	ProvisionTenant(ctx context.Context, tenantID string) error
	// DeprovisionTenant deletes it; idempotent, and a no-op for a tenant never provisioned.
	DeprovisionTenant(ctx context.Context, tenantID string) error
}

// Connections is the connection service's part of the saga.
type Connections interface {
	// OffboardTenant revokes every connection of a DELETING tenant and returns how many
	// revocations the providers have not confirmed yet. With abandonPending those are given up.
	OffboardTenant(ctx context.Context, tenantID string, abandonPending bool) (pending int, err error)
}

// Sync is the sync service's part of the saga.
type Sync interface {
	// PurgeTenant deletes a batch of what sync holds for a DELETING tenant and reports whether
	// anything is left.
	PurgeTenant(ctx context.Context, tenantID string) (done bool, err error)
}

// Store is where the saga's state lives (identity's store).
type Store interface {
	DueLifecycle(ctx context.Context, now time.Time, limit int) ([]store.Tenant, error)
	UpdateTenant(ctx context.Context, tenantID string, change func(t *store.Tenant) (*store.Event, error)) (*store.Tenant, error)
}

// Outcome is what one attempt at a step did, for logs and tests.
type Outcome struct {
	TenantID string
	Step     store.LifecycleStep
	// Err is the participant's failure; nil when the step completed or is waiting.
	Err error
	// Pending is connections.offboard's count of unconfirmed revocations, or 1 while
	// sync.purge has more batches to delete.
	Pending int
	// Done is true when the step completed.
	Done bool
}

// Config configures a Worker.
type Config struct {
	Store       Store
	Vault       Vault
	Connections Connections
	Sync        Sync
	// OffboardDeadline: once this long has passed since DeleteTenant, revocations still
	// pending are given up (default 72h).
	OffboardDeadline time.Duration
	// Interval between scans for due steps when nothing wakes the worker (default 2s).
	Interval time.Duration
	// PendingRecheck is how soon connections.offboard is asked again while revocations are
	// pending (default 1m; the connection service's own worker retries them meanwhile).
	PendingRecheck time.Duration
	// Lease is how long a claimed step is hidden from other workers (default 2m); it must
	// outlast StepTimeout.
	Lease time.Duration
	// StepTimeout bounds one call to a participant (default 1m).
	StepTimeout time.Duration
	// MaxBackoff caps the retry delay of a failing step (default 5m).
	MaxBackoff time.Duration
	// Parallel is how many tenants' steps run at once (default 4).
	Parallel int
	// StatusChanged is told when the saga changed a tenant's status (deleting → deleted).
	StatusChanged func(tenantID string)
	Logger        *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
	// OnStep, if set, is called after every attempt (tests wait on it instead of sleeping).
	OnStep func(Outcome)
}

// Worker runs the saga's due steps.
type Worker struct {
	cfg  Config
	log  *slog.Logger
	kick chan struct{}
	// base bounds the steps RunNow starts, which outlive the request that asked; Close ends it.
	base   context.Context
	cancel context.CancelFunc
	mu     sync.Mutex // guards closed against wg.Add racing Close's Wait
	closed bool
	wg     sync.WaitGroup
}

// scanLimit is how many due tenants one scan takes.
const scanLimit = 64

// New checks cfg and returns a Worker.
func New(cfg Config) (*Worker, error) {
	if cfg.Store == nil || cfg.Vault == nil || cfg.Connections == nil || cfg.Sync == nil {
		return nil, errors.New("lifecycle: Store, Vault, Connections and Sync are required")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.OffboardDeadline, 72*time.Hour)
	def(&cfg.Interval, 2*time.Second)
	def(&cfg.PendingRecheck, time.Minute)
	def(&cfg.StepTimeout, time.Minute)
	def(&cfg.Lease, 2*cfg.StepTimeout)
	def(&cfg.MaxBackoff, 5*time.Minute)
	if cfg.Lease <= cfg.StepTimeout {
		return nil, errors.New("lifecycle: Lease must outlast StepTimeout")
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 4
	}
	if cfg.StatusChanged == nil {
		cfg.StatusChanged = func(string) {}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	base, cancel := context.WithCancel(context.Background())
	return &Worker{cfg: cfg, log: log.With("component", "lifecycle"), kick: make(chan struct{}, 1), base: base, cancel: cancel}, nil
}

// RunNow runs tenantID's pending step at once and waits for it at most wait (or until ctx
// ends). The step goes on after that and is recorded as usual; if another worker already has
// it, RunNow returns at once.
func (w *Worker) RunNow(ctx context.Context, tenantID string, step store.LifecycleStep, wait time.Duration) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	done := make(chan struct{})
	w.wg.Go(func() {
		defer close(done)
		w.attempt(w.base, tenantID, step)
	})
	w.mu.Unlock()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	case <-ctx.Done():
	}
}

// Close stops the steps RunNow started and waits for them. Run stops with its own context.
func (w *Worker) Close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.cancel()
	w.wg.Wait()
}

// Kick wakes the worker for a step that just became due (a tenant created or deleted).
func (w *Worker) Kick() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// Run scans for due steps until ctx ends.
func (w *Worker) Run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.kick:
		case <-t.C:
		}
		// A full scan of steps this worker ran means more may be due: go again at once. (Steps
		// it could not claim do not count, so a failing claim cannot spin this loop.)
		for w.RunOnce(ctx) == scanLimit && ctx.Err() == nil {
		}
		t.Reset(w.cfg.Interval)
	}
}

// RunOnce runs every step due now and returns how many it claimed and ran.
func (w *Worker) RunOnce(ctx context.Context) int {
	due, err := w.cfg.Store.DueLifecycle(ctx, w.cfg.Now(), scanLimit)
	if err != nil {
		if ctx.Err() == nil {
			w.log.WarnContext(ctx, "scanning due lifecycle steps", "error", err)
		}
		return 0
	}
	sem := make(chan struct{}, w.cfg.Parallel)
	var (
		wg  sync.WaitGroup
		ran atomic.Int64
	)
	for _, t := range due {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if w.attempt(ctx, t.ID, t.Lifecycle.Step) {
				ran.Add(1)
			}
		})
	}
	wg.Wait()
	return int(ran.Load())
}

// attempt claims tenantID's step, runs it and records the outcome. It reports whether it
// claimed the step.
func (w *Worker) attempt(ctx context.Context, tenantID string, step store.LifecycleStep) bool {
	claimed, err := w.claim(ctx, tenantID, step)
	if err != nil {
		w.log.WarnContext(ctx, "claiming a lifecycle step", "tenant_id", tenantID, "step", step, "error", err)
		return false
	}
	if claimed == nil {
		return false // another worker has it, or it changed since the scan
	}
	out := Outcome{TenantID: tenantID, Step: step}
	sctx, cancel := context.WithTimeout(ctx, w.cfg.StepTimeout)
	switch step {
	case store.StepVaultProvision:
		out.Err = w.cfg.Vault.ProvisionTenant(sctx, tenantID)
	case store.StepConnectionsOffboard:
		abandon := !claimed.Lifecycle.DeleteRequestedAt.IsZero() &&
			w.cfg.Now().After(claimed.Lifecycle.DeleteRequestedAt.Add(w.cfg.OffboardDeadline))
		out.Pending, out.Err = w.cfg.Connections.OffboardTenant(sctx, tenantID, abandon)
	case store.StepSyncPurge:
		var done bool
		done, out.Err = w.cfg.Sync.PurgeTenant(sctx, tenantID)
		if out.Err == nil && !done {
			out.Pending = 1
		}
	case store.StepVaultDeprovision:
		out.Err = w.cfg.Vault.DeprovisionTenant(sctx, tenantID)
	default:
		out.Err = fmt.Errorf("unknown lifecycle step %q", step)
	}
	cancel()
	if ctx.Err() != nil {
		return true // shutting down: the lease runs out and the step comes due again
	}
	out.Done = out.Err == nil && out.Pending == 0
	if err := w.record(ctx, tenantID, out); err != nil {
		w.log.WarnContext(ctx, "recording a lifecycle step", "tenant_id", tenantID, "step", step, "error", err)
	}
	if w.cfg.OnStep != nil {
		w.cfg.OnStep(out)
	}
	return true
}

// claim pushes the step's due time out by the lease if it is still step and still due. It
// returns the tenant as claimed, or nil when there was nothing to claim.
func (w *Worker) claim(ctx context.Context, tenantID string, step store.LifecycleStep) (*store.Tenant, error) {
	var claimed bool
	now := w.cfg.Now()
	t, err := w.cfg.Store.UpdateTenant(ctx, tenantID, func(t *store.Tenant) (*store.Event, error) {
		if t.Lifecycle.Step != step || t.Lifecycle.NextAt.After(now) {
			return nil, nil
		}
		t.Lifecycle.NextAt, claimed = now.Add(w.cfg.Lease), true
		return nil, nil
	})
	if err != nil || !claimed {
		return nil, err
	}
	return t, nil
}

// record writes the outcome, unless the step was replaced meanwhile (DeleteTenant during a
// provision): then the replacing step stands.
func (w *Worker) record(ctx context.Context, tenantID string, out Outcome) error {
	now := w.cfg.Now()
	var statusChanged bool
	_, err := w.cfg.Store.UpdateTenant(ctx, tenantID, func(t *store.Tenant) (*store.Event, error) {
		l := &t.Lifecycle
		if l.Step != out.Step {
			return nil, nil
		}
		switch {
		case out.Err != nil:
			l.Attempts++
			l.LastError = describe(out.Err)
			l.NextAt = now.Add(w.backoff(l.Attempts))
			return nil, nil
		case out.Pending > 0 && out.Step == store.StepSyncPurge:
			l.NextAt = now // the next batch, at once
			return nil, nil
		case out.Pending > 0:
			l.Attempts++
			l.LastError = fmt.Sprintf("%d revocation(s) not yet confirmed by the provider", out.Pending)
			l.NextAt = now.Add(w.cfg.PendingRecheck)
			return nil, nil
		}
		l.Done = append(l.Done, string(out.Step))
		l.Attempts, l.LastError = 0, ""
		switch out.Step {
		case store.StepConnectionsOffboard:
			l.Step, l.NextAt = store.StepSyncPurge, now
		case store.StepSyncPurge:
			l.Step, l.NextAt = store.StepVaultDeprovision, now
		case store.StepVaultDeprovision:
			l.Step, l.NextAt = store.StepNone, time.Time{}
			t.Status, statusChanged = store.TenantDeleted, true
			return &store.Event{Type: store.EventTenantDeleted, Payload: map[string]any{
				"tenant_id": t.ID, "status": string(t.Status),
			}}, nil
		default:
			l.Step, l.NextAt = store.StepNone, time.Time{}
		}
		return nil, nil
	})
	if err != nil {
		return err
	}
	switch {
	case out.Err != nil:
		w.log.WarnContext(ctx, "lifecycle step failed; retrying", "tenant_id", tenantID, "step", out.Step, "error", describe(out.Err))
	case out.Pending > 0:
		w.log.InfoContext(ctx, "lifecycle step waiting for providers", "tenant_id", tenantID, "step", out.Step, "pending", out.Pending)
	default:
		w.log.InfoContext(ctx, "lifecycle step done", "tenant_id", tenantID, "step", out.Step)
	}
	if statusChanged {
		w.cfg.StatusChanged(tenantID)
	}
	if out.Done || (out.Pending > 0 && out.Step == store.StepSyncPurge) {
		w.Kick() // the next step (or batch) is due now: no need to wait for the next scan
	}
	return nil
}

// backoff is the delay before attempt n+1: exponential from 1s, capped, with jitter so
// tenants failing together (Vault down) do not retry in lockstep.
func (w *Worker) backoff(attempts int) time.Duration {
	d := w.cfg.MaxBackoff
	if attempts < 30 {
		d = min(time.Second<<attempts, w.cfg.MaxBackoff)
	}
	return d/2 + rand.N(d/2+1)
}

// describe is a failure as shown in TenantLifecycle.last_error: a participant's gRPC code and
// message (they never carry secrets), bounded to the column's 500 characters.
func describe(err error) string {
	msg := err.Error()
	// The innermost status: status.FromError would answer with the whole wrapped text.
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		st := se.GRPCStatus()
		msg = st.Code().String() + ": " + st.Message()
	}
	if r := []rune(msg); len(r) > 500 {
		msg = string(r[:497]) + "..."
	}
	return msg
}
