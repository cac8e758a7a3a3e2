package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/services/identity/internal/store"
)

const saCols = `tenant_id, id, name, description, scopes, created_at`

func scanServiceAccount(row pgx.Row) (store.ServiceAccount, error) {
	var sa store.ServiceAccount
	err := row.Scan(&sa.TenantID, &sa.ID, &sa.Name, &sa.Description, &sa.Scopes, &sa.CreatedAt)
	return sa, err
}

const (
	insertSASQL = `INSERT INTO service_accounts (tenant_id, id, name, description, scopes)
VALUES ($1, $2, $3, $4, $5) RETURNING ` + saCols

	getSASQL = `SELECT ` + saCols + ` FROM service_accounts
WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL`

	listSASQL = `SELECT ` + saCols + ` FROM service_accounts
WHERE tenant_id = $1 AND deleted_at IS NULL
	AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3::uuid))
ORDER BY created_at, id LIMIT $4`

	deleteSASQL = `UPDATE service_accounts SET deleted_at = now()
WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL`

	revokeSAKeysSQL = `UPDATE api_keys SET revoked_at = now()
WHERE tenant_id = $1 AND service_account_id = $2 AND revoked_at IS NULL`
)

// CreateServiceAccount implements store.ServiceAccounts in one round trip.
func (p *Postgres) CreateServiceAccount(ctx context.Context, tenantID string, in store.ServiceAccount) (*store.ServiceAccount, error) {
	sa, err := pgtenant.QueryOne(ctx, p.db, pgtenant.Scope{TenantID: tenantID}, insertSASQL,
		[]any{tenantID, in.ID, in.Name, in.Description, in.Scopes},
		func(row pgx.CollectableRow) (store.ServiceAccount, error) { return scanServiceAccount(row) })
	if err != nil {
		return nil, interpretError(err)
	}
	return &sa, nil
}

// GetServiceAccount implements store.ServiceAccounts in one round trip.
func (p *Postgres) GetServiceAccount(ctx context.Context, tenantID, id string) (*store.ServiceAccount, error) {
	sa, err := pgtenant.QueryOne(ctx, p.db, pgtenant.Scope{TenantID: tenantID}, getSASQL, []any{tenantID, id},
		func(row pgx.CollectableRow) (store.ServiceAccount, error) { return scanServiceAccount(row) })
	if err != nil {
		return nil, interpretError(err)
	}
	return &sa, nil
}

// ListServiceAccounts implements store.ServiceAccounts in one round trip.
func (p *Postgres) ListServiceAccounts(ctx context.Context, tenantID string, page store.Page) ([]store.ServiceAccount, *store.Cursor, error) {
	after, afterID := cursorArgs(page)
	out, err := pgtenant.Query(ctx, p.db, pgtenant.Scope{TenantID: tenantID}, listSASQL,
		[]any{tenantID, after, afterID, limitArg(page)},
		func(row pgx.CollectableRow) (store.ServiceAccount, error) { return scanServiceAccount(row) })
	if err != nil {
		return nil, nil, interpretError(err)
	}
	items, next := paginate(out, page, func(sa store.ServiceAccount) store.Cursor {
		return store.Cursor{CreatedAt: sa.CreatedAt, ID: sa.ID}
	})
	return items, next, nil
}

// DeleteServiceAccount implements store.ServiceAccounts.
func (p *Postgres) DeleteServiceAccount(ctx context.Context, tenantID, id string) error {
	return p.inTenant(ctx, tenantID, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, deleteSASQL, tenantID, id)
		if err != nil {
			return fmt.Errorf("delete service account: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return store.ErrNotFound
		}
		if _, err := tx.Exec(ctx, revokeSAKeysSQL, tenantID, id); err != nil {
			return fmt.Errorf("revoke service account keys: %w", err)
		}
		return nil
	})
}
