package store

import (
	"context"
	"time"

	"github.com/bulkhead/bulkhead/pkg/outbox"
)

// EventCursor is a position in the outbox: the writing transaction's id and the row's
// sequence number. The zero value is the start.
type EventCursor = outbox.Cursor

// StoredEvent is an outbox row as read back.
type StoredEvent struct {
	TenantID  string
	ID        string
	Type      string
	Payload   map[string]any
	CreatedAt time.Time
	Cursor    EventCursor
}

// EventLog reads the outbox for Bulkhead services. Separate from Store because it is the one
// read that spans tenants on a service's behalf.
type EventLog interface {
	// ListEvents returns at most limit events after after, of the given types (all when
	// empty), across every tenant, ordered by cursor. It returns only events whose writing
	// transaction is older than every transaction still running, so an event never appears
	// behind a cursor already returned. Callers must have authorized a Bulkhead service.
	ListEvents(ctx context.Context, after EventCursor, types []string, limit int) ([]StoredEvent, error)
}
