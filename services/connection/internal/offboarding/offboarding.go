// Package offboarding is the connection service's consumer of identity's events: when identity
// removes a member, that user's user-level connections in that tenant are revoked (org-level
// ones stay).
//
// Deleting a tenant is not an event here any more: identity's tenant-deletion saga calls
// TenantOffboardingService.OffboardTenant directly, until nothing is pending, before the
// vault-broker deletes the tenant's Vault layout — an ordering a feed consumer could not give
// it. identity's tenant.deleted events are not asked for.
//
// It pulls (EventService.ListEvents) rather than being pushed, so no broker is needed, through
// pkg/eventcursor: a durable cursor in the connection database, one replica at a time, at least
// once. Handling is idempotent — a revoked connection is left as it is — so re-delivery changes
// nothing.
package offboarding

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/bulkhead/bulkhead/pkg/eventcursor"
	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/services/connection/internal/app"
	"github.com/bulkhead/bulkhead/services/connection/internal/identity"
)

// EventMemberRemoved is the event type this consumer acts on (identity's outbox).
const EventMemberRemoved = "member.removed"

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
}

// Pass is what one pass did, for logs and test signals.
type Pass = eventcursor.Pass

// Worker runs offboarding passes.
type Worker = eventcursor.Worker[identity.Event]

// Config configures the offboarding consumer.
type Config struct {
	DB      *pgtenant.DB
	Source  Source
	Revoker Revoker
	// Interval between passes (default 5s).
	Interval time.Duration
	Logger   *slog.Logger
	// OnPass, if set, is called after every pass (tests wait on it instead of sleeping).
	OnPass func(Pass)
}

// New checks cfg and returns a Worker.
func New(cfg Config) (*Worker, error) {
	if cfg.DB == nil || cfg.Source == nil || cfg.Revoker == nil {
		return nil, errors.New("offboarding: DB, Source and Revoker are required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := handler{revoker: cfg.Revoker, log: log.With("component", Consumer)}
	types := []string{EventMemberRemoved}
	return eventcursor.New(eventcursor.Config[identity.Event]{
		DB: cfg.DB, Name: Consumer, LockKey: lockKey,
		List: func(ctx context.Context, after string, pageSize int) ([]identity.Event, string, error) {
			return cfg.Source.ListEvents(ctx, after, pageSize, types)
		},
		Cursor:   func(ev identity.Event) string { return ev.Cursor },
		Handle:   h.handle,
		Interval: cfg.Interval, Logger: log, OnPass: cfg.OnPass,
	})
}

type handler struct {
	revoker Revoker
	log     *slog.Logger
}

// handle acts on one event. Events for tenants or users this service has nothing of are
// no-ops (the revoker finds no connection); an event missing its ids is skipped with a log.
func (h handler) handle(ctx context.Context, ev identity.Event) error {
	var (
		res app.OffboardResult
		err error
	)
	switch {
	case ev.TenantID == "":
		h.log.WarnContext(ctx, "skipping an event without tenant", "event_id", ev.ID, "type", ev.Type)
		return nil
	case ev.Type == EventMemberRemoved && ev.UserID == "":
		h.log.WarnContext(ctx, "skipping member.removed without user_id", "event_id", ev.ID, "tenant_id", ev.TenantID)
		return nil
	case ev.Type == EventMemberRemoved:
		res, err = h.revoker.OffboardUser(ctx, ev.TenantID, ev.UserID)
	default:
		return nil
	}
	if err == nil && res.Revoked+res.Pending > 0 {
		h.log.InfoContext(ctx, "offboarded", "type", ev.Type, "event_id", ev.ID, "tenant_id", ev.TenantID,
			"user_id", ev.UserID, "revoked", res.Revoked, "revocation_pending", res.Pending)
	}
	if err != nil {
		return fmt.Errorf("%s event %s of tenant %s: %w", ev.Type, ev.ID, ev.TenantID, err)
	}
	return nil
}
