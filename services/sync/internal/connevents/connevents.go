// Package connevents is the sync service's consumer of the connection service's events: each
// change of a connection (revoked, deleted, refresh failed, recovered…) becomes a
// connection.changed webhook event of its tenant, and a revoked or deleted connection's syncs
// are paused at once (their jobs cancelled) instead of failing at their next run.
//
// It pulls (EventService.ListEvents) as the service itself (its platform credential needs
// events.read) through pkg/eventcursor: a durable cursor in the sync database, one replica at a
// time, at least once. Pausing is idempotent, and the webhook event carries the connection
// event's id for receivers to deduplicate on.
package connevents

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	connectionv1 "github.com/bulkhead/bulkhead/gen/bulkhead/connection/v1"
	"github.com/bulkhead/bulkhead/pkg/eventcursor"
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
type Pass = eventcursor.Pass

// Worker runs passes.
type Worker = eventcursor.Worker[Event]

// Config configures a Worker.
type Config struct {
	DB      *pgtenant.DB
	Source  Source
	Handler Handler
	// Interval between passes [5s].
	Interval time.Duration
	Logger   *slog.Logger
	// OnPass, if set, is called after every pass (tests wait on it instead of sleeping).
	OnPass func(Pass)
}

// New checks cfg and returns a Worker.
func New(cfg Config) (*Worker, error) {
	if cfg.DB == nil || cfg.Source == nil || cfg.Handler == nil {
		return nil, errors.New("connevents: DB, Source and Handler are required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", Consumer)
	return eventcursor.New(eventcursor.Config[Event]{
		DB: cfg.DB, Name: Consumer, LockKey: lockKey,
		List: func(ctx context.Context, after string, pageSize int) ([]Event, string, error) {
			return cfg.Source.ListEvents(ctx, after, pageSize, Types)
		},
		Cursor: func(ev Event) string { return ev.Cursor },
		Handle: func(ctx context.Context, ev Event) error {
			if ev.TenantID == "" || ev.ConnectionID == "" {
				log.WarnContext(ctx, "skipping a connection event without tenant or connection", "event_id", ev.ID, "type", ev.Type)
				return nil
			}
			if err := cfg.Handler(ctx, ev); err != nil {
				return fmt.Errorf("%s event %s of tenant %s: %w", ev.Type, ev.ID, ev.TenantID, err)
			}
			return nil
		},
		Interval: cfg.Interval, Logger: log, OnPass: cfg.OnPass,
	})
}
