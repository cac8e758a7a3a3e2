package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/services/sync/internal/store"
	"github.com/bulkhead/bulkhead/services/sync/internal/webhook"
)

// ConnectionChange is the data of connection.changed webhook events: one event of the
// connection service's outbox, as the tenant's receivers see it.
type ConnectionChange struct {
	ConnectionID string `json:"connection_id"`
	// Type is the connection event's type (connection.revoked, connection.refresh_failed…).
	Type string `json:"type"`
	// ConnectionEventID is the connection service's event id: the same on a re-delivery of
	// the same event, so receivers can deduplicate on it.
	ConnectionEventID string `json:"connection_event_id"`
	Integration       string `json:"integration,omitempty"`
	Status            string `json:"status,omitempty"`
	Reason            string `json:"reason,omitempty"`
	// PausedSyncs counts the syncs of the connection this event paused.
	PausedSyncs int `json:"paused_syncs"`
}

// ConnectionChanged records a change of a connection in tenantID: with stop (the connection is
// revoked or deleted), its active syncs are paused and their jobs cancelled (a running one
// stops at its next page); then a connection.changed webhook event is written — all in one
// transaction. Idempotent but for the webhook event, which a re-delivery writes again (with the
// same ConnectionEventID). It returns how many syncs it paused.
func (e *Engine) ConnectionChanged(ctx context.Context, tenantID string, ch ConnectionChange, stop bool) (int, error) {
	scope := pgtenant.Scope{TenantID: tenantID}
	err := e.db.InTx(ctx, scope, func(tx pgx.Tx) error {
		ch.PausedSyncs = 0
		if stop {
			n, err := e.pauseConnection(ctx, tx, tenantID, ch.ConnectionID)
			if err != nil {
				return err
			}
			ch.PausedSyncs = n
		}
		return e.emit(ctx, tx, tenantID, webhook.EventConnectionChanged, ch)
	})
	return ch.PausedSyncs, err
}

func (e *Engine) pauseConnection(ctx context.Context, tx pgx.Tx, tenantID, connectionID string) (int, error) {
	const page = 500
	var (
		after   time.Time
		afterID string
		paused  int
	)
	for {
		list, err := store.ListSyncs(ctx, tx, tenantID, connectionID, after, afterID, page)
		if err != nil {
			return 0, err
		}
		for _, s := range list {
			if s.State == store.StatePaused {
				continue
			}
			if s.JobID != nil {
				if _, err := e.river.JobCancelTx(ctx, tx, *s.JobID); err != nil && !errors.Is(err, river.ErrNotFound) {
					return 0, fmt.Errorf("engine: cancel job: %w", err)
				}
			}
			if _, err := store.SetState(ctx, tx, tenantID, s.ID, store.StatePaused); err != nil {
				return 0, err
			}
			paused++
		}
		if len(list) < page {
			return paused, nil
		}
		last := list[len(list)-1]
		after, afterID = last.CreatedAt, last.ID
	}
}
