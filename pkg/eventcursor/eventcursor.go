// Package eventcursor consumes another service's event feed (an outbox exposed through a
// ListEvents RPC) with a durable cursor, one replica at a time.
//
// Each pass runs in one global transaction of the consumer's own database that first takes a
// transaction-level advisory lock: one replica consumes, the others skip the pass. The cursor
// lives in the table event_cursors(consumer text primary key, cursor text, updated_at
// timestamptz) — every consuming service ships that table in its migrations — and is written in
// the pass's transaction after the events before it were handled. A crash therefore re-delivers
// them (at least once): handlers must be idempotent. A failing event stops the pass before it;
// the next pass retries it.
package eventcursor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bulkhead/bulkhead/pkg/pgtenant"
)

// Pass is what one pass did, for logs and test signals.
type Pass struct {
	// Locked is false when another replica held the lock: the pass did nothing.
	Locked bool
	// Events were handled and the cursor moved past them.
	Events int
	// Cursor is the stored cursor after the pass.
	Cursor string
	// Err is why the pass stopped early (the cursor stays before the failed event).
	Err error
}

// Config configures a Worker over events of type E.
type Config[E any] struct {
	DB *pgtenant.DB
	// Name is the consumer's row in event_cursors (and its logs' component).
	Name string
	// LockKey is the advisory lock every replica of this consumer shares; distinct per consumer.
	LockKey int64
	// List returns up to pageSize events after the cursor after ("" from the start) and the
	// cursor to continue from when there were none.
	List func(ctx context.Context, after string, pageSize int) (events []E, next string, err error)
	// Cursor is the position after ev.
	Cursor func(ev E) string
	// Handle acts on one event; it must be idempotent.
	Handle func(ctx context.Context, ev E) error
	// Interval between passes (default 5s).
	Interval time.Duration
	// PageSize of each List call (default 100); MaxPages bounds one pass (default 10), so the
	// pass's transaction and lock are not held for long.
	PageSize int
	MaxPages int
	Logger   *slog.Logger
	// OnPass, if set, is called after every pass (tests wait on it instead of sleeping).
	OnPass func(Pass)
}

// Worker runs passes. Safe for concurrent use (passes serialize on the lock).
type Worker[E any] struct {
	cfg Config[E]
	log *slog.Logger
}

// New checks cfg and returns a Worker.
func New[E any](cfg Config[E]) (*Worker[E], error) {
	if cfg.DB == nil || cfg.Name == "" || cfg.List == nil || cfg.Cursor == nil || cfg.Handle == nil {
		return nil, errors.New("eventcursor: DB, Name, List, Cursor and Handle are required")
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
	return &Worker[E]{cfg: cfg, log: log.With("component", cfg.Name)}, nil
}

// Run passes every Interval until ctx ends, starting at once. A failed pass is logged and
// retried at the next tick.
func (w *Worker[E]) Run(ctx context.Context) {
	t := time.NewTicker(w.cfg.Interval)
	defer t.Stop()
	for {
		p := w.RunOnce(ctx)
		if p.Err != nil && ctx.Err() == nil {
			w.log.WarnContext(ctx, "event pass failed", "error", p.Err.Error(), "cursor", p.Cursor)
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

// RunOnce runs one pass: under the lock, it pages the events after the stored cursor, handles
// each, and stores the cursor after the last one handled.
func (w *Worker[E]) RunOnce(ctx context.Context) Pass {
	var p Pass
	err := w.cfg.DB.InGlobalTx(ctx, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, lockSQL, w.cfg.LockKey).Scan(&p.Locked); err != nil || !p.Locked {
			return err
		}
		if _, err := tx.Exec(ctx, ensureSQL, w.cfg.Name); err != nil {
			return fmt.Errorf("eventcursor %s: cursor row: %w", w.cfg.Name, err)
		}
		if err := tx.QueryRow(ctx, readCursorSQL, w.cfg.Name).Scan(&p.Cursor); err != nil {
			return fmt.Errorf("eventcursor %s: read cursor: %w", w.cfg.Name, err)
		}
		start := p.Cursor
		p.Err = w.consume(ctx, &p)
		if p.Cursor == start {
			return nil
		}
		// Saved even when a later event failed: the events before it are done.
		if _, err := tx.Exec(ctx, saveCursorSQL, w.cfg.Name, p.Cursor); err != nil {
			return fmt.Errorf("eventcursor %s: save cursor: %w", w.cfg.Name, err)
		}
		return nil
	})
	if err != nil {
		p.Err = errors.Join(p.Err, err)
	}
	return p
}

// consume handles pages of events after p.Cursor, moving p.Cursor past each handled one.
func (w *Worker[E]) consume(ctx context.Context, p *Pass) error {
	for range w.cfg.MaxPages {
		evs, next, err := w.cfg.List(ctx, p.Cursor, w.cfg.PageSize)
		if err != nil {
			return err
		}
		for _, ev := range evs {
			if err := w.cfg.Handle(ctx, ev); err != nil {
				return fmt.Errorf("eventcursor %s: %w", w.cfg.Name, err)
			}
			p.Events++
			p.Cursor = w.cfg.Cursor(ev)
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
