// Package connevents is the sync service's consumer of the connection service's events: each
// change of a connection (revoked, deleted, refresh failed, recovered…) becomes a
// connection.changed webhook event of its tenant, and a revoked or deleted connection's syncs
// are paused at once (their jobs cancelled) instead of failing at their next run.
//
// It pulls (EventService.ListEvents) as the service itself (its platform credential needs
// events.read). Its cursor lives in the sync database (event_cursors), and each pass runs in one
// global transaction that first takes a transaction-level advisory lock: one replica consumes
// at a time, the others skip the pass. The cursor is written in that transaction after the
// events before it were handled, so a crash re-delivers them (at least once): pausing is
// idempotent, and the webhook event carries the connection event's id for receivers to
// deduplicate on.
package connevents

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	connectionv1 "github.com/bulkhead/bulkhead/gen/bulkhead/connection/v1"
	"github.com/bulkhead/bulkhead/pkg/grpcserver"
	"github.com/bulkhead/bulkhead/pkg/pgtenant"
)

// Event types of the connection service's outbox this consumer handles. connection.refreshed
// (every token refresh) is left out: it changes nothing a tenant's receivers act on.
const (
	EventCreated       = "connection.created"
	EventRefreshFailed = "connection.refresh_failed"
	EventRecovered     = "connection.recovered"
	EventRevoked       = "connection.revoked"
	EventDeleted       = "connection.deleted"
	EventDisabled      = "connection.disabled"
	EventEnabled       = "connection.enabled"
	EventReauthorized  = "connection.reauthorized"
)

// Types are the event types consumed.
var Types = []string{EventCreated, EventRefreshFailed, EventRecovered, EventRevoked, EventDeleted, EventDisabled, EventEnabled, EventReauthorized}

// Stops reports whether an event type ends the connection's syncs.
func Stops(eventType string) bool { return eventType == EventRevoked || eventType == EventDeleted }

// Consumer is this consumer's row in event_cursors.
const Consumer = "connection-events"

// lockKey is the advisory lock of a pass, shared by every replica: the bytes of "syncconn".
const lockKey int64 = 0x73796e63636f6e6e

// Event is one connection event, as this consumer needs it.
type Event struct {
	TenantID, ID, Type, ConnectionID string
	Integration, Status, Reason      string
	// Cursor is the position after this event.
	Cursor string
}

// Source is the connection service's event log (*Client).
type Source interface {
	ListEvents(ctx context.Context, after string, pageSize int, types []string) ([]Event, string, error)
}

// Handler acts on one event (the engine's ConnectionChanged); it must be idempotent.
type Handler func(ctx context.Context, ev Event) error

// Client reads the connection service's outbox as the service itself. Safe for concurrent use.
type Client struct {
	c       connectionv1.EventServiceClient
	token   func(ctx context.Context) (string, error)
	timeout time.Duration
}

// NewClient returns a Client on conn (the connection service's gRPC connection), authenticating
// with token, the service's own token (its audience must include bulkhead.connection).
func NewClient(conn grpc.ClientConnInterface, token func(ctx context.Context) (string, error)) (*Client, error) {
	if conn == nil || token == nil {
		return nil, errors.New("connevents: NewClient needs a connection and a token source")
	}
	return &Client{c: connectionv1.NewEventServiceClient(conn), token: token, timeout: 10 * time.Second}, nil
}

// ListEvents returns up to pageSize events of types after the cursor after ("" from the
// start) and the cursor to continue from.
func (c *Client) ListEvents(ctx context.Context, after string, pageSize int, types []string) ([]Event, string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	tok, err := c.token(ctx)
	if err != nil {
		return nil, "", err
	}
	// Towards the outbox the service acts as itself: its token is both credentials.
	ctx = metadata.NewOutgoingContext(ctx, metadata.Pairs(grpcserver.MDAuthorization, "Bearer "+tok, grpcserver.MDServiceToken, tok))
	resp, err := c.c.ListEvents(ctx, &connectionv1.ListEventsRequest{AfterCursor: after, PageSize: int32(pageSize), Types: types})
	if err != nil {
		return nil, "", fmt.Errorf("connevents: list events: %w", err)
	}
	out := make([]Event, len(resp.GetEvents()))
	for i, ev := range resp.GetEvents() {
		f := ev.GetPayload().GetFields()
		out[i] = Event{
			TenantID: ev.GetTenantId(), ID: ev.GetEventId(), Type: ev.GetType(), ConnectionID: ev.GetConnectionId(),
			Integration: f["integration"].GetStringValue(), Status: f["status"].GetStringValue(),
			Reason: f["reason"].GetStringValue(), Cursor: ev.GetCursor(),
		}
	}
	return out, resp.GetNextCursor(), nil
}

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

// Config configures a Worker.
type Config struct {
	DB      *pgtenant.DB
	Source  Source
	Handler Handler
	// Interval between passes [5s].
	Interval time.Duration
	// PageSize of each ListEvents call [100]; MaxPages bounds one pass [10], so the pass's
	// transaction and lock are not held for long.
	PageSize int
	MaxPages int
	Logger   *slog.Logger
	// OnPass, if set, is called after every pass (tests wait on it instead of sleeping).
	OnPass func(Pass)
}

// Worker runs passes. Safe for concurrent use (passes serialize on the lock).
type Worker struct {
	cfg Config
	log *slog.Logger
}

// New checks cfg and returns a Worker.
func New(cfg Config) (*Worker, error) {
	if cfg.DB == nil || cfg.Source == nil || cfg.Handler == nil {
		return nil, errors.New("connevents: DB, Source and Handler are required")
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
	return &Worker{cfg: cfg, log: log.With("component", "connevents")}, nil
}

// Run passes every Interval until ctx ends, starting at once. A failed pass is logged and
// retried at the next tick.
func (w *Worker) Run(ctx context.Context) {
	t := time.NewTicker(w.cfg.Interval)
	defer t.Stop()
	for {
		p := w.RunOnce(ctx)
		if p.Err != nil && ctx.Err() == nil {
			w.log.WarnContext(ctx, "connection events pass failed", "error", p.Err.Error(), "cursor", p.Cursor)
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
func (w *Worker) RunOnce(ctx context.Context) Pass {
	var p Pass
	err := w.cfg.DB.InGlobalTx(ctx, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, lockSQL, lockKey).Scan(&p.Locked); err != nil || !p.Locked {
			return err
		}
		if _, err := tx.Exec(ctx, ensureSQL, Consumer); err != nil {
			return fmt.Errorf("connevents: cursor row: %w", err)
		}
		if err := tx.QueryRow(ctx, readCursorSQL, Consumer).Scan(&p.Cursor); err != nil {
			return fmt.Errorf("connevents: read cursor: %w", err)
		}
		start := p.Cursor
		p.Err = w.consume(ctx, &p)
		if p.Cursor == start {
			return nil
		}
		// Saved even when a later event failed: the events before it are done.
		if _, err := tx.Exec(ctx, saveCursorSQL, Consumer, p.Cursor); err != nil {
			return fmt.Errorf("connevents: save cursor: %w", err)
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
	for range w.cfg.MaxPages {
		evs, next, err := w.cfg.Source.ListEvents(ctx, p.Cursor, w.cfg.PageSize, Types)
		if err != nil {
			return err
		}
		for _, ev := range evs {
			if ev.TenantID == "" || ev.ConnectionID == "" {
				w.log.WarnContext(ctx, "skipping a connection event without tenant or connection", "event_id", ev.ID, "type", ev.Type)
			} else if err := w.cfg.Handler(ctx, ev); err != nil {
				return fmt.Errorf("connevents: %s event %s of tenant %s: %w", ev.Type, ev.ID, ev.TenantID, err)
			}
			p.Events++
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
