package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bulkhead/bulkhead/pkg/authz"
	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/services/identity/internal/store"
)

const tenantCols = `id, name, status, suspend_reason, created_at, updated_at,
	coalesce(lifecycle_step, ''), lifecycle_attempts, lifecycle_error, lifecycle_next_at, lifecycle_done,
	delete_requested_at`

func scanTenant(row pgx.Row) (store.Tenant, error) {
	var (
		t              store.Tenant
		next, deleteAt *time.Time
	)
	l := &t.Lifecycle
	err := row.Scan(&t.ID, &t.Name, &t.Status, &t.SuspendReason, &t.CreatedAt, &t.UpdatedAt,
		&l.Step, &l.Attempts, &l.LastError, &next, &l.Done, &deleteAt)
	if next != nil {
		l.NextAt = *next
	}
	if deleteAt != nil {
		l.DeleteRequestedAt = *deleteAt
	}
	return t, err
}

// timeArg is t for a nullable timestamptz: NULL when zero.
func timeArg(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// tenantChanged reports whether UpdateTenant's change modified what it may modify.
func tenantChanged(a, b *store.Tenant) bool {
	la, lb := a.Lifecycle, b.Lifecycle
	return a.Status != b.Status || a.SuspendReason != b.SuspendReason ||
		la.Step != lb.Step || la.Attempts != lb.Attempts || la.LastError != lb.LastError ||
		!la.NextAt.Equal(lb.NextAt) || !slices.Equal(la.Done, lb.Done) ||
		!la.DeleteRequestedAt.Equal(lb.DeleteRequestedAt)
}

const (
	// A new tenant's first lifecycle step is due at once: provisioning it in Vault.
	insertTenantSQL = `INSERT INTO tenants (id, name, lifecycle_step, lifecycle_next_at)
VALUES ($1, $2, 'vault.provision', now()) RETURNING ` + tenantCols

	// claimIdempotencySQL inserts the record, or takes over an expired one. When a live record
	// holds the key — committed earlier, or by a concurrent transaction this statement waited
	// for — it returns no row.
	claimIdempotencySQL = `INSERT INTO idempotency_keys
	(key, request_hash, result_tenant_id, owner_user_id, api_key_id, expires_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (key) DO UPDATE SET
	request_hash = excluded.request_hash, result_tenant_id = excluded.result_tenant_id,
	owner_user_id = excluded.owner_user_id, api_key_id = excluded.api_key_id,
	created_at = now(), expires_at = excluded.expires_at
WHERE idempotency_keys.expires_at <= now()
RETURNING key`

	lookupIdempotencySQL = `SELECT key, request_hash, result_tenant_id, owner_user_id, api_key_id, expires_at
FROM idempotency_keys WHERE key = $1 AND expires_at > now()`

	lockIdempotencySQL = `SELECT owner_user_id, api_key_id FROM idempotency_keys WHERE key = $1 FOR UPDATE`

	repointIdempotencySQL = `UPDATE idempotency_keys SET api_key_id = $2 WHERE key = $1`

	getTenantSQL = `SELECT ` + tenantCols + ` FROM tenants WHERE id = $1`

	lockTenantRowSQL = `SELECT ` + tenantCols + ` FROM tenants WHERE id = $1 FOR UPDATE`

	updateTenantSQL = `UPDATE tenants SET status = $2, suspend_reason = $3,
	lifecycle_step = nullif($4, ''), lifecycle_attempts = $5, lifecycle_error = $6,
	lifecycle_next_at = $7, lifecycle_done = $8, delete_requested_at = $9, updated_at = now()
WHERE id = $1 RETURNING ` + tenantCols

	dueLifecycleSQL = `SELECT ` + tenantCols + ` FROM tenants
WHERE lifecycle_step IS NOT NULL AND lifecycle_next_at <= $1
ORDER BY lifecycle_next_at LIMIT $2`

	listTenantsSQL = `SELECT ` + tenantCols + ` FROM tenants
WHERE $1::timestamptz IS NULL OR (created_at, id) > ($1, $2::uuid)
ORDER BY created_at, id LIMIT $3`

	tenantStatusSQL = `SELECT status FROM tenants WHERE id = $1`
)

// CreateTenant implements store.Tenants.
func (p *Postgres) CreateTenant(ctx context.Context, in store.NewTenant) (*store.TenantCreation, error) {
	var out store.TenantCreation
	err := p.inTenant(ctx, in.ID, func(tx pgx.Tx) error {
		t, err := scanTenant(tx.QueryRow(ctx, insertTenantSQL, in.ID, in.Name))
		if err != nil {
			return fmt.Errorf("insert tenant: %w", err)
		}
		out.Tenant = t
		// Claimed right after the tenant row (which the record references) and before the rest:
		// a concurrent request with the same key blocks here until this one ends, then finds
		// the record and replays it, so concurrent identical creates make one tenant.
		if rec := in.Idempotency; rec != nil {
			var key string
			err := tx.QueryRow(ctx, claimIdempotencySQL, rec.KeyHash, rec.RequestHash, in.ID,
				in.Owner.UserID, in.OwnerKey.ID, rec.ExpiresAt).Scan(&key)
			if errors.Is(err, pgx.ErrNoRows) {
				return store.ErrIdempotencyKeyTaken
			}
			if err != nil {
				return fmt.Errorf("claim idempotency key: %w", err)
			}
		}
		owner, err := insertMember(ctx, tx, in.ID, in.Owner)
		if err != nil {
			return err
		}
		out.Owner = *owner
		key, err := insertAPIKey(ctx, tx, in.ID, in.OwnerKey)
		if err != nil {
			return err
		}
		out.Key = *key
		return insertEvent(ctx, tx, in.ID, store.Event{Type: store.EventTenantCreated, Payload: map[string]any{
			"tenant_id": in.ID, "owner_user_id": owner.UserID,
		}})
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// LookupIdempotency implements store.Tenants. The table is global, so it runs with no tenant.
func (p *Postgres) LookupIdempotency(ctx context.Context, keyHash string) (*store.IdempotencyRecord, error) {
	var rec store.IdempotencyRecord
	err := p.db.InGlobalTx(ctx, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, lookupIdempotencySQL, keyHash).Scan(&rec.KeyHash, &rec.RequestHash,
			&rec.TenantID, &rec.OwnerUserID, &rec.APIKeyID, &rec.ExpiresAt)
	})
	if err != nil {
		return nil, interpretError(err)
	}
	return &rec, nil
}

// ReplayTenantCreation implements store.Tenants.
func (p *Postgres) ReplayTenantCreation(ctx context.Context, rec store.IdempotencyRecord, fresh store.NewAPIKey) (*store.TenantCreation, bool, error) {
	var (
		out     store.TenantCreation
		rotated bool
	)
	err := p.inTenant(ctx, rec.TenantID, func(tx pgx.Tx) error {
		// Locking the record makes concurrent replays take turns: the second sees the key the
		// first minted as the recorded one.
		var ownerID, keyID string
		if err := tx.QueryRow(ctx, lockIdempotencySQL, rec.KeyHash).Scan(&ownerID, &keyID); err != nil {
			return fmt.Errorf("lock idempotency record: %w", err)
		}
		t, err := scanTenant(tx.QueryRow(ctx, getTenantSQL, rec.TenantID))
		if err != nil {
			return fmt.Errorf("read tenant: %w", err)
		}
		out.Tenant = t
		owner, err := scanMember(tx.QueryRow(ctx, getUserAsMemberSQL, rec.TenantID, ownerID))
		if err != nil {
			return fmt.Errorf("read owner: %w", err)
		}
		out.Owner = owner
		key, err := scanAPIKey(tx.QueryRow(ctx, getAPIKeySQL, rec.TenantID, keyID))
		if err != nil {
			return fmt.Errorf("read owner key: %w", err)
		}
		out.Key = key
		unused := key.LastUsedAt.IsZero() && key.RevokedAt.IsZero()
		if !unused || t.Status != store.TenantActive || owner.Role == "" {
			return nil
		}
		if _, err := tx.Exec(ctx, revokeAPIKeyByIDSQL, rec.TenantID, keyID); err != nil {
			return fmt.Errorf("revoke unused key: %w", err)
		}
		fresh.UserID, fresh.ServiceAccountID = ownerID, ""
		nk, err := insertAPIKey(ctx, tx, rec.TenantID, fresh)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, repointIdempotencySQL, rec.KeyHash, nk.ID); err != nil {
			return fmt.Errorf("update idempotency record: %w", err)
		}
		out.Key, rotated = *nk, true
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	return &out, rotated, nil
}

// GetTenant implements store.Tenants in one round trip.
func (p *Postgres) GetTenant(ctx context.Context, tenantID string) (*store.Tenant, error) {
	t, err := pgtenant.QueryOne(ctx, p.db, pgtenant.Scope{TenantID: tenantID}, getTenantSQL,
		[]any{tenantID}, func(row pgx.CollectableRow) (store.Tenant, error) { return scanTenant(row) })
	if err != nil {
		return nil, interpretError(err)
	}
	return &t, nil
}

// ListTenants implements store.Tenants through a platform transaction: the tenants table's
// platform_select policy is what lets it see every row; every other table stays empty there.
func (p *Postgres) ListTenants(ctx context.Context, page store.Page) ([]store.Tenant, *store.Cursor, error) {
	var out []store.Tenant
	after, afterID := cursorArgs(page)
	err := p.db.InPlatformTx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, listTenantsSQL, after, afterID, limitArg(page))
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Tenant, error) { return scanTenant(row) })
		return err
	})
	if err != nil {
		return nil, nil, interpretError(err)
	}
	items, next := paginate(out, page, func(t store.Tenant) store.Cursor { return store.Cursor{CreatedAt: t.CreatedAt, ID: t.ID} })
	return items, next, nil
}

// UpdateTenant implements store.Tenants.
func (p *Postgres) UpdateTenant(ctx context.Context, tenantID string, change func(t *store.Tenant) (*store.Event, error)) (*store.Tenant, error) {
	var out store.Tenant
	err := p.inTenant(ctx, tenantID, func(tx pgx.Tx) error {
		t, err := scanTenant(tx.QueryRow(ctx, lockTenantRowSQL, tenantID))
		if err != nil {
			return fmt.Errorf("lock tenant: %w", err)
		}
		before := t
		before.Lifecycle.Done = slices.Clone(t.Lifecycle.Done)
		ev, err := change(&t)
		if err != nil {
			return err
		}
		if ev == nil && !tenantChanged(&before, &t) {
			out = t
			return nil
		}
		l := t.Lifecycle
		if l.Done == nil {
			l.Done = []string{}
		}
		out, err = scanTenant(tx.QueryRow(ctx, updateTenantSQL, tenantID, t.Status, t.SuspendReason,
			string(l.Step), l.Attempts, l.LastError, timeArg(l.NextAt), l.Done, timeArg(l.DeleteRequestedAt)))
		if err != nil {
			return fmt.Errorf("update tenant: %w", err)
		}
		if ev == nil {
			return nil
		}
		return insertEvent(ctx, tx, tenantID, *ev)
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// DueLifecycle implements store.Tenants through a platform transaction (read-only: see
// ListTenants).
func (p *Postgres) DueLifecycle(ctx context.Context, now time.Time, limit int) ([]store.Tenant, error) {
	var out []store.Tenant
	err := p.db.InPlatformTx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, dueLifecycleSQL, now, limit)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Tenant, error) { return scanTenant(row) })
		return err
	})
	if err != nil {
		return nil, interpretError(err)
	}
	return out, nil
}

// TenantStatus implements store.Tenants in one round trip.
func (p *Postgres) TenantStatus(ctx context.Context, tenantID string) (store.TenantStatus, error) {
	s, err := pgtenant.QueryOne(ctx, p.db, pgtenant.Scope{TenantID: tenantID}, tenantStatusSQL,
		[]any{tenantID}, pgx.RowTo[store.TenantStatus])
	if err != nil {
		return "", interpretError(err)
	}
	return s, nil
}

// MemberRole implements store.Credentials in one round trip.
func (p *Postgres) MemberRole(ctx context.Context, tenantID, userID string) (authz.Role, store.TenantStatus, error) {
	type result struct {
		status store.TenantStatus
		role   *string
	}
	r, err := pgtenant.QueryOne(ctx, p.db, pgtenant.Scope{TenantID: tenantID}, memberRoleSQL,
		[]any{tenantID, userID}, func(row pgx.CollectableRow) (result, error) {
			var r result
			err := row.Scan(&r.status, &r.role)
			return r, err
		})
	if err != nil {
		return "", "", interpretError(err)
	}
	if r.role == nil {
		return "", "", store.ErrNotFound
	}
	return authz.Role(*r.role), r.status, nil
}

const memberRoleSQL = `SELECT t.status, m.role FROM tenants t
LEFT JOIN memberships m ON m.tenant_id = t.id AND m.user_id = $2
WHERE t.id = $1`
