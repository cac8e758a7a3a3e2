package postgres

import (
	"cmp"
	"context"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/bulkhead/bulkhead/services/connection/internal/store"
)

var _ store.Maintenance = (*Postgres)(nil)

// dueSQL: $1 now, $2 now+margin, $3 now-idle, $4 limit. A failing connection waits
// 30 s·2^failures (at most an hour) after its last failure before the worker tries again.
// Random order under the limit: rows that stay due pass after pass (a suspended tenant's,
// which the worker may not touch) cannot starve the rest when more than limit are due.
const dueSQL = `SELECT tenant_id::text, id::text, coalesce(owner_user_id::text, ''),
       CASE WHEN status = 'revoked' THEN 'revocation' ELSE 'refresh' END,
       status = 'active' AND NOT (access_expires_at IS NOT NULL AND access_expires_at <= $2)
                         AND NOT (next_check_at IS NOT NULL AND next_check_at <= $1)
FROM connections
WHERE (revocation_state = 'pending' AND revocation_next_at <= $1)
   OR (status = 'active'
       AND (access_expires_at <= $2 OR next_check_at <= $1
            OR (auth_type = 'oauth2' AND coalesce(last_refresh_at, created_at) <= $3))
       AND (consecutive_failures = 0 OR last_failure_at IS NULL
            OR last_failure_at + least(interval '30 seconds' * power(2, least(consecutive_failures, 10)), interval '1 hour') <= $1))
ORDER BY random()
LIMIT $4`

// DueConnections implements store.Maintenance through a platform transaction (the
// conn_platform_select policy of migration 00004).
func (p *Postgres) DueConnections(ctx context.Context, q store.DueQuery) ([]store.Due, error) {
	if q.Limit <= 0 {
		q.Limit = 500
	}
	var out []store.Due
	err := p.db.InPlatformTx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, dueSQL, q.Now, q.Now.Add(q.Margin), q.Now.Add(-q.Idle), q.Limit)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Due, error) {
			var (
				d    store.Due
				work string
			)
			err := row.Scan(&d.TenantID, &d.ID, &d.OwnerUserID, &work, &d.Idle)
			d.Work = store.DueWork(work)
			return d, err
		})
		return err
	})
	if err != nil {
		return nil, interpretError(err)
	}
	slices.SortFunc(out, func(a, b store.Due) int {
		return cmp.Or(strings.Compare(a.TenantID, b.TenantID), strings.Compare(a.ID, b.ID))
	})
	return out, nil
}
