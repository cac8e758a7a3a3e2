package app

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/services/connection/internal/store"
)

// Event page sizes of EventService.ListEvents (the proto caps the request at 500 too).
const (
	defaultEventPage = 100
	maxEventPage     = 500
)

// Events is EventService's use case: Bulkhead services page through the connection outbox.
// It mirrors identity's EventService (same cursor, same late-commit-safe order).
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
	cur, err := DecodeEventCursor(after)
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
		next = EncodeEventCursor(evs[len(evs)-1].Cursor)
	}
	return &EventPage{Events: evs, Next: next}, nil
}

// EncodeEventCursor renders a cursor as "<xid>.<seq>" (identity's format). Not signed and not
// secret: it only says where to continue in a log the caller may read in full anyway.
func EncodeEventCursor(c store.EventCursor) string {
	return strconv.FormatUint(c.XID, 10) + "." + strconv.FormatInt(c.Seq, 10)
}

// DecodeEventCursor parses EncodeEventCursor's output; "" is the start.
func DecodeEventCursor(s string) (store.EventCursor, error) {
	if s == "" {
		return store.EventCursor{}, nil
	}
	bad := apierr.InvalidArgument("after_cursor", "invalid cursor")
	x, q, ok := strings.Cut(s, ".")
	if !ok {
		return store.EventCursor{}, bad
	}
	xid, err := strconv.ParseUint(x, 10, 64)
	if err != nil {
		return store.EventCursor{}, bad
	}
	seq, err := strconv.ParseInt(q, 10, 64)
	if err != nil || seq < 0 {
		return store.EventCursor{}, bad
	}
	return store.EventCursor{XID: xid, Seq: seq}, nil
}
