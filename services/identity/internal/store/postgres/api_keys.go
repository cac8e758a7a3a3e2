package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bulkhead/bulkhead/pkg/authz"
	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/services/identity/internal/store"
)

const keyCols = `tenant_id, id, lookup_id, user_id, service_account_id, created_at, expires_at, revoked_at, last_used_at`

func scanAPIKey(row pgx.Row) (store.APIKey, error) {
	var (
		k                         store.APIKey
		user, sa                  *string
		expires, revoked, lastUse *time.Time
	)
	if err := row.Scan(&k.TenantID, &k.ID, &k.LookupID, &user, &sa, &k.CreatedAt, &expires, &revoked, &lastUse); err != nil {
		return k, err
	}
	k.UserID, k.ServiceAccountID = deref(user), deref(sa)
	k.ExpiresAt, k.RevokedAt, k.LastUsedAt = timeOrZero(expires), timeOrZero(revoked), timeOrZero(lastUse)
	return k, nil
}

// lastUseGranularity is how stale last_used_at may get: a key used more often than this costs
// no write per token, at the price of a last-use time up to this much in the past.
const lastUseGranularity = time.Minute

const (
	insertAPIKeySQL = `INSERT INTO api_keys
	(tenant_id, id, lookup_id, secret_hash, user_id, service_account_id, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ` + keyCols

	getAPIKeySQL = `SELECT ` + keyCols + ` FROM api_keys WHERE tenant_id = $1 AND id = $2`

	lockAPIKeySQL = getAPIKeySQL + ` FOR UPDATE`

	listAPIKeysSQL = `SELECT ` + keyCols + ` FROM api_keys
WHERE tenant_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3::uuid))
ORDER BY created_at, id LIMIT $4`

	revokeAPIKeyByIDSQL = `UPDATE api_keys SET revoked_at = now()
WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL`

	revokeAPIKeyReturningSQL = revokeAPIKeyByIDSQL + ` RETURNING ` + keyCols

	// The owner checks lock the owner's row in share mode: a concurrent RemoveMember or
	// DeleteServiceAccount then either runs first (and this finds no owner) or waits for this
	// insert and revokes the new key along with the others.
	lockLiveSASQL = `SELECT 1 FROM service_accounts
WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL FOR SHARE`
	lockMembershipSQL = `SELECT 1 FROM memberships WHERE tenant_id = $1 AND user_id = $2 FOR SHARE`

	// authenticateKeySQL reads the key with everything that decides whether it still
	// authenticates: the tenant's status, the user's membership, the service account's state.
	authenticateKeySQL = `SELECT k.tenant_id, k.id, k.lookup_id, k.user_id, k.service_account_id,
	k.created_at, k.expires_at, k.revoked_at, k.last_used_at,
	k.secret_hash, t.status, m.role, sa.scopes, sa.deleted_at IS NULL AS sa_live
FROM api_keys k
JOIN tenants t ON t.id = k.tenant_id
LEFT JOIN memberships m ON m.tenant_id = k.tenant_id AND m.user_id = k.user_id
LEFT JOIN service_accounts sa ON sa.tenant_id = k.tenant_id AND sa.id = k.service_account_id
WHERE k.tenant_id = $1 AND k.lookup_id = $2`

	touchAPIKeySQL = `UPDATE api_keys SET last_used_at = now()
WHERE tenant_id = $1 AND id = $2 AND (last_used_at IS NULL OR last_used_at < now() - make_interval(secs => $3))`
)

func insertAPIKey(ctx context.Context, tx pgx.Tx, tenantID string, k store.NewAPIKey) (*store.APIKey, error) {
	out, err := scanAPIKey(tx.QueryRow(ctx, insertAPIKeySQL, tenantID, k.ID, k.LookupID, k.SecretHash,
		nullString(k.UserID), nullString(k.ServiceAccountID), nullTime(k.ExpiresAt)))
	if err != nil {
		return nil, fmt.Errorf("insert api key: %w", err)
	}
	return &out, nil
}

// CreateAPIKey implements store.APIKeys.
func (p *Postgres) CreateAPIKey(ctx context.Context, tenantID string, k store.NewAPIKey) (*store.APIKey, error) {
	var out *store.APIKey
	err := p.inTenant(ctx, tenantID, func(tx pgx.Tx) error {
		lock, owner := lockMembershipSQL, k.UserID
		if k.ServiceAccountID != "" {
			lock, owner = lockLiveSASQL, k.ServiceAccountID
		}
		var one int
		if err := tx.QueryRow(ctx, lock, tenantID, owner).Scan(&one); err != nil {
			return fmt.Errorf("find key owner: %w", err)
		}
		var err error
		out, err = insertAPIKey(ctx, tx, tenantID, k)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ListAPIKeys implements store.APIKeys in one round trip.
func (p *Postgres) ListAPIKeys(ctx context.Context, tenantID string, page store.Page) ([]store.APIKey, *store.Cursor, error) {
	after, afterID := cursorArgs(page)
	out, err := pgtenant.Query(ctx, p.db, pgtenant.Scope{TenantID: tenantID}, listAPIKeysSQL,
		[]any{tenantID, after, afterID, limitArg(page)},
		func(row pgx.CollectableRow) (store.APIKey, error) { return scanAPIKey(row) })
	if err != nil {
		return nil, nil, interpretError(err)
	}
	items, next := paginate(out, page, func(k store.APIKey) store.Cursor { return store.Cursor{CreatedAt: k.CreatedAt, ID: k.ID} })
	return items, next, nil
}

// RevokeAPIKey implements store.APIKeys.
func (p *Postgres) RevokeAPIKey(ctx context.Context, tenantID, keyID string, check func(store.APIKey) error) (*store.APIKey, error) {
	var out store.APIKey
	err := p.inTenant(ctx, tenantID, func(tx pgx.Tx) error {
		k, err := scanAPIKey(tx.QueryRow(ctx, lockAPIKeySQL, tenantID, keyID))
		if err != nil {
			return fmt.Errorf("read api key: %w", err)
		}
		if check != nil {
			if err := check(k); err != nil {
				return err
			}
		}
		if !k.RevokedAt.IsZero() {
			out = k
			return nil
		}
		out, err = scanAPIKey(tx.QueryRow(ctx, revokeAPIKeyReturningSQL, tenantID, keyID))
		if err != nil {
			return fmt.Errorf("revoke api key: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// keyRow is authenticateKeySQL's row.
type keyRow struct {
	key    store.APIKey
	hash   []byte
	status store.TenantStatus
	role   *string
	scopes []string
	saLive *bool
}

// AuthenticateAPIKey implements store.Credentials: one round trip to read, and a second only
// when last_used_at is due for a refresh.
func (p *Postgres) AuthenticateAPIKey(ctx context.Context, tenantID, lookupID string, now time.Time, verify func(hash []byte) bool) (*store.KeyPrincipal, error) {
	scope := pgtenant.Scope{TenantID: tenantID}
	r, err := pgtenant.QueryOne(ctx, p.db, scope, authenticateKeySQL, []any{tenantID, lookupID},
		func(row pgx.CollectableRow) (keyRow, error) {
			var (
				r                         keyRow
				user, sa                  *string
				expires, revoked, lastUse *time.Time
			)
			err := row.Scan(&r.key.TenantID, &r.key.ID, &r.key.LookupID, &user, &sa, &r.key.CreatedAt,
				&expires, &revoked, &lastUse, &r.hash, &r.status, &r.role, &r.scopes, &r.saLive)
			r.key.UserID, r.key.ServiceAccountID = deref(user), deref(sa)
			r.key.ExpiresAt, r.key.RevokedAt, r.key.LastUsedAt = timeOrZero(expires), timeOrZero(revoked), timeOrZero(lastUse)
			return r, err
		})
	if err != nil {
		return nil, interpretError(err)
	}
	// The hash is checked before anything else about the key, so an unauthenticated caller
	// learns nothing about a key's state (or its tenant's) from the answer.
	if !verify(r.hash) {
		return nil, store.ErrNotFound
	}
	switch {
	case !r.key.RevokedAt.IsZero():
		return nil, fmt.Errorf("%w: key revoked", store.ErrNotFound)
	case !r.key.ExpiresAt.IsZero() && !now.Before(r.key.ExpiresAt):
		return nil, fmt.Errorf("%w: key expired", store.ErrNotFound)
	case r.key.UserID != "" && r.role == nil:
		return nil, fmt.Errorf("%w: key owner is no longer a member", store.ErrNotFound)
	case r.key.ServiceAccountID != "" && (r.saLive == nil || !*r.saLive):
		return nil, fmt.Errorf("%w: key owner is a deleted service account", store.ErrNotFound)
	}
	if r.key.LastUsedAt.IsZero() || now.Sub(r.key.LastUsedAt) >= lastUseGranularity {
		tag, err := pgtenant.Exec(ctx, p.db, scope, touchAPIKeySQL, tenantID, r.key.ID, lastUseGranularity.Seconds())
		if err != nil {
			return nil, interpretError(err)
		}
		if tag.RowsAffected() > 0 {
			r.key.LastUsedAt = now
		}
	}
	out := &store.KeyPrincipal{Key: r.key, TenantStatus: r.status, Scopes: r.scopes}
	if r.role != nil {
		out.Role = authz.Role(*r.role)
	}
	return out, nil
}
