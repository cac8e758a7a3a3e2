package app

import (
	"context"
	"errors"

	"github.com/bulkhead/bulkhead/pkg/outbox"
	"github.com/bulkhead/bulkhead/services/identity/internal/store"
)

// Events is EventService's use case: Bulkhead services page through identity's outbox.
type Events struct {
	log store.EventLog
}

// NewEvents returns the use case on log.
func NewEvents(log store.EventLog) (*Events, error) {
	if log == nil {
		return nil, errors.New("app: NewEvents needs an event log")
	}
	return &Events{log: log}, nil
}

// EventPage is one page of events and the cursor to continue from.
type EventPage struct {
	Events []store.StoredEvent
	Next   string
}

// List returns up to size events after the cursor after ("" from the start), of types (all
// when empty). The caller must be an authorized Bulkhead service: this read spans tenants.
func (e *Events) List(ctx context.Context, after string, size int32, types []string) (*EventPage, error) {
	cur, err := outbox.ParseCursor(after)
	if err != nil {
		return nil, err
	}
	limit := int(size)
	if limit <= 0 {
		limit = defaultPageSize
	}
	limit = min(limit, maxPageSize)
	evs, err := e.log.ListEvents(ctx, cur, types, limit)
	if err != nil {
		return nil, err
	}
	next := after
	if len(evs) > 0 {
		next = evs[len(evs)-1].Cursor.String()
	}
	return &EventPage{Events: evs, Next: next}, nil
}
