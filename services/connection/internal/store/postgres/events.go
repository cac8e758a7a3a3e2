package postgres

import (
	"context"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/bulkhead/bulkhead/services/connection/internal/store"
)

var _ store.EventLog = (*Postgres)(nil)

// listOutboxSQL: see migrations/00003_outbox_events.sql for why the cursor is (xid, seq) and
// why rows of transactions at or after the snapshot's xmin are held back. xid8 travels as text
// (pgx has no xid8 codec). The query mirrors identity's outbox read.
const listOutboxSQL = `SELECT tenant_id::text, id::text, event_type, connection_id::text, payload, created_at, xid::text, seq
FROM outbox
WHERE (xid, seq) > ($1::text::xid8, $2::bigint)
  AND xid < pg_snapshot_xmin(pg_current_snapshot())
  AND (cardinality($3::text[]) = 0 OR event_type = ANY($3::text[]))
ORDER BY xid, seq LIMIT $4`

// ListEvents implements store.EventLog through a platform transaction: the outbox's
// outbox_platform_select policy is what lets this one read see every tenant's events.
func (p *Postgres) ListEvents(ctx context.Context, after store.EventCursor, types []store.EventType, limit int) ([]store.StoredEvent, error) {
	if limit <= 0 {
		limit = 100
	}
	ts := make([]string, len(types))
	for i, t := range types {
		ts[i] = string(t)
	}
	var out []store.StoredEvent
	err := p.db.InPlatformTx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, listOutboxSQL, strconv.FormatUint(after.XID, 10), after.Seq, ts, limit)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.StoredEvent, error) {
			var (
				e        store.StoredEvent
				typ, xid string
			)
			if err := row.Scan(&e.TenantID, &e.ID, &typ, &e.ConnectionID, &e.Payload, &e.CreatedAt, &xid, &e.Cursor.Seq); err != nil {
				return e, err
			}
			x, err := strconv.ParseUint(xid, 10, 64)
			if err != nil {
				return e, err
			}
			e.Type, e.Cursor.XID = store.EventType(typ), x
			return e, nil
		})
		return err
	})
	if err != nil {
		return nil, interpretError(err)
	}
	return out, nil
}
