// Package offboarding is the connection service's consumer of identity's events: when identity
// removes a member, that user's user-level connections in that tenant are revoked (org-level
// ones stay); when a tenant is deleted, all its connections are.
//
// It pulls (EventService.ListEvents) rather than being pushed, so no broker is needed. Its
// cursor lives in the connection database (event_cursors), and each pass runs in one global
// transaction that first takes a transaction-level advisory lock: one replica consumes at a
// time, the others skip the pass. The cursor is written in that transaction after the events
// before it were handled, so a crash re-delivers them (at least once); handling is idempotent
// — a revoked connection is left as it is — so re-delivery changes nothing.
package offboarding

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/services/connection/internal/app"
	"github.com/bulkhead/bulkhead/services/connection/internal/identity"
)

// Event types this consumer acts on (identity's outbox).
const (
	EventMemberRemoved = "member.removed"
	EventTenantDeleted = "tenant.deleted"
)

// Consumer is this consumer's row in event_cursors.
const Consumer = "offboarding"

// lockKey is the advisory lock of the offboarding pass, shared by every replica. Arbitrary but
// fixed: the bytes of "offboard" as a bigint.
const lockKey int64 = 0x6f6666626f617264

// Source is identity's event log (*identity.Events).
type Source interface {
	ListEvents(ctx context.Context, after string, pageSize int, types []string) ([]identity.Event, string, error)
}

// Revoker revokes connections (*app.App).
type Revoker interface {
	OffboardUser(ctx context.Context, tenantID, userID string) (app.OffboardResult, error)
	OffboardTenant(ctx context.Context, tenantID string) (app.OffboardResult, error)
}

// Pass is what one pass did, for logs and test signals.
type Pass struct {
	// Locked is false when another replica held the lock: the pass did nothing.
	Locked bool
	// Events were handled (acted on or skipped) and the cursor moved past them.
	Events int
	// Revoked and Pending add up the handled events' results (app.OffboardResult).
	Revoked, Pending int
	// Cursor is the stored cursor after the pass.
	Cursor string
	// Err is why the pass stopped early (the cursor stays before the failed event).
	Err error
}

// Config configures a Worker.
type Config struct {
	DB      *pgtenant.DB
	Source  Source
	Revoker Revoker
	// Interval between passes (default 5s).
	Interval time.Duration
	// PageSize of each ListEvents call (default 100); MaxPages bounds one pass (default 10), so
	// the pass's transaction and lock are not held for long.
	PageSize int
	MaxPages int
	Logger   *slog.Logger
	// OnPass, if set, is called after every pass (tests wait on it instead of sleeping).
	OnPass func(Pass)
}

// Worker runs offboarding passes. Safe for concurrent use (passes serialize on the lock).
type Worker struct {
	cfg Config
	log *slog.Logger
}

// New checks cfg and returns a Worker.
func New(cfg Config) (*Worker, error) {
	if cfg.DB == nil || cfg.Source == nil || cfg.Revoker == nil {
		return nil, errors.New("offboarding: DB, Source and Revoker are required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 5 * time.Second
	}
	if cfg.PageSize <= 0 {
		cfg.PageSize = 100
	}
	if cfg.MaxPages <= 0 {
		cfg.MaxPages = 10
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Worker{cfg: cfg, log: log.With("component", "offboarding")}, nil
}

// Run passes every Interval until ctx ends, starting at once. A failed pass is logged and
// retried at the next tick.
func (w *Worker) Run(ctx context.Context) {
	t := time.NewTicker(w.cfg.Interval)
	defer t.Stop()
	for {
		p := w.RunOnce(ctx)
		if p.Err != nil && ctx.Err() == nil {
			w.log.WarnContext(ctx, "offboarding pass failed", "error", p.Err.Error(), "cursor", p.Cursor)
		}
		if w.cfg.OnPass != nil {
			w.cfg.OnPass(p)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

const (
	lockSQL       = `SELECT pg_try_advisory_xact_lock($1)`
	ensureSQL     = `INSERT INTO event_cursors (consumer, cursor) VALUES ($1, '') ON CONFLICT (consumer) DO NOTHING`
	readCursorSQL = `SELECT cursor FROM event_cursors WHERE consumer = $1`
	saveCursorSQL = `UPDATE event_cursors SET cursor = $2, updated_at = now() WHERE consumer = $1`
)

// RunOnce runs one pass: under the lock, it pages identity's events after the stored cursor,
// handles each, and stores the cursor after the last one handled.
func (w *Worker) RunOnce(ctx context.Context) Pass {
	var p Pass
	err := w.cfg.DB.InGlobalTx(ctx, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, lockSQL, lockKey).Scan(&p.Locked); err != nil || !p.Locked {
			return err
		}
		if _, err := tx.Exec(ctx, ensureSQL, Consumer); err != nil {
			return fmt.Errorf("offboarding: cursor row: %w", err)
		}
		if err := tx.QueryRow(ctx, readCursorSQL, Consumer).Scan(&p.Cursor); err != nil {
			return fmt.Errorf("offboarding: read cursor: %w", err)
		}
		start := p.Cursor
		p.Err = w.consume(ctx, &p)
		if p.Cursor == start {
			return nil
		}
		// Saved even when a later event failed: the events before it are done.
		if _, err := tx.Exec(ctx, saveCursorSQL, Consumer, p.Cursor); err != nil {
			return fmt.Errorf("offboarding: save cursor: %w", err)
		}
		return nil
	})
	if err != nil {
		p.Err = errors.Join(p.Err, err)
	}
	return p
}

// consume handles pages of events after p.Cursor, moving p.Cursor past each handled one.
func (w *Worker) consume(ctx context.Context, p *Pass) error {
	types := []string{EventMemberRemoved, EventTenantDeleted}
	for range w.cfg.MaxPages {
		evs, next, err := w.cfg.Source.ListEvents(ctx, p.Cursor, w.cfg.PageSize, types)
		if err != nil {
			return err
		}
		for _, ev := range evs {
			res, err := w.handle(ctx, ev)
			if err != nil {
				return fmt.Errorf("offboarding: %s event %s of tenant %s: %w", ev.Type, ev.ID, ev.TenantID, err)
			}
			p.Events++
			p.Revoked += res.Revoked
			p.Pending += res.Pending
			p.Cursor = ev.Cursor
		}
		if len(evs) == 0 {
			if next != "" {
				p.Cursor = next
			}
			return nil
		}
	}
	return nil
}

// handle acts on one event. Events for tenants or users this service has nothing of are
// no-ops (the revoker finds no connection); an event missing its ids is skipped with a log.
func (w *Worker) handle(ctx context.Context, ev identity.Event) (app.OffboardResult, error) {
	var (
		res app.OffboardResult
		err error
	)
	switch {
	case ev.TenantID == "":
		w.log.WarnContext(ctx, "skipping an event without tenant", "event_id", ev.ID, "type", ev.Type)
		return res, nil
	case ev.Type == EventMemberRemoved && ev.UserID == "":
		w.log.WarnContext(ctx, "skipping member.removed without user_id", "event_id", ev.ID, "tenant_id", ev.TenantID)
		return res, nil
	case ev.Type == EventMemberRemoved:
		res, err = w.cfg.Revoker.OffboardUser(ctx, ev.TenantID, ev.UserID)
	case ev.Type == EventTenantDeleted:
		res, err = w.cfg.Revoker.OffboardTenant(ctx, ev.TenantID)
	default:
		return res, nil
	}
	if err == nil && res.Revoked+res.Pending > 0 {
		w.log.InfoContext(ctx, "offboarded", "type", ev.Type, "event_id", ev.ID, "tenant_id", ev.TenantID,
			"user_id", ev.UserID, "revoked", res.Revoked, "revocation_pending", res.Pending)
	}
	return res, err
}
