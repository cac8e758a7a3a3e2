// Package outbox holds what every service's event feed (an outbox table read through a
// services-only ListEvents RPC) shares: the position cursor.
//
// A feed is ordered by (writer's transaction id, sequence) and only returns rows of
// transactions older than the oldest still running, so an event whose transaction commits late
// is never skipped by a consumer that already moved past a later sequence number.
package outbox

import (
	"strconv"
	"strings"

	"github.com/bulkhead/bulkhead/pkg/apierr"
)

// Cursor is a position in a feed: the writing transaction's id (xid8) and the row's sequence.
type Cursor struct {
	XID uint64
	Seq int64
}

// String renders the cursor as "<xid>.<seq>". Not signed and not secret: it only says where
// to continue in a log the caller may read in full anyway.
func (c Cursor) String() string {
	return strconv.FormatUint(c.XID, 10) + "." + strconv.FormatInt(c.Seq, 10)
}

// ParseCursor parses String's output; "" is the start. A malformed cursor is an
// InvalidArgument on after_cursor.
func ParseCursor(s string) (Cursor, error) {
	if s == "" {
		return Cursor{}, nil
	}
	bad := apierr.InvalidArgument("after_cursor", "invalid cursor")
	x, q, ok := strings.Cut(s, ".")
	if !ok {
		return Cursor{}, bad
	}
	xid, err := strconv.ParseUint(x, 10, 64)
	if err != nil {
		return Cursor{}, bad
	}
	seq, err := strconv.ParseInt(q, 10, 64)
	if err != nil || seq < 0 {
		return Cursor{}, bad
	}
	return Cursor{XID: xid, Seq: seq}, nil
}
