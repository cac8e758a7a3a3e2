package app

import (
	"context"
	"errors"
	"fmt"

	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/pkg/outbox"
	"github.com/bulkhead/bulkhead/services/connection/internal/store"
)

// Event page sizes of EventService.ListEvents (the proto caps the request at 500 too).
const (
	defaultEventPage = 100
	maxEventPage     = 500
)

// Events is EventService's use case: Bulkhead services page through the connection outbox.
// It mirrors identity's EventService: the same cursor (pkg/outbox) and late-commit-safe order.
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
		limit = defaultEventPage
	}
	limit = min(limit, maxEventPage)
	ts := make([]store.EventType, len(types))
	for i, t := range types {
		ts[i] = store.EventType(t)
	}
	evs, err := e.log.ListEvents(ctx, cur, ts, limit)
	if err != nil {
		return nil, apierr.Internal(fmt.Errorf("app: list events: %w", err))
	}
	next := after
	if len(evs) > 0 {
		next = evs[len(evs)-1].Cursor.String()
	}
	return &EventPage{Events: evs, Next: next}, nil
}
