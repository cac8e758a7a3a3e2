package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/services/connection/internal/store"
)

const settingsCols = `tenant_id::text, integration, enabled, coalesce(oauth_client_id, ''),
	coalesce(oauth_secret_id::text, ''), allowed_scopes, coalesce(connection_scope, ''), created_at, updated_at`

const (
	getSettingsSQL  = `SELECT ` + settingsCols + ` FROM integration_settings WHERE tenant_id = $1 AND integration = $2`
	listSettingsSQL = `SELECT ` + settingsCols + ` FROM integration_settings WHERE tenant_id = $1 ORDER BY integration`
	// ensureSettingsSQL creates the defaults row so that the next statement has a row to lock
	// even on the tenant's first change.
	ensureSettingsSQL = `INSERT INTO integration_settings (tenant_id, integration) VALUES ($1, $2)
		ON CONFLICT (tenant_id, integration) DO NOTHING`
	lockSettingsSQL   = getSettingsSQL + ` FOR UPDATE`
	updateSettingsSQL = `UPDATE integration_settings SET enabled = $3, oauth_client_id = $4, oauth_secret_id = $5,
		allowed_scopes = $6, connection_scope = $7, updated_at = now()
		WHERE tenant_id = $1 AND integration = $2
		RETURNING ` + settingsCols
)

func scanSettings(row pgx.CollectableRow) (store.Settings, error) {
	var s store.Settings
	var scope string
	err := row.Scan(&s.TenantID, &s.Integration, &s.Enabled, &s.OAuthClientID, &s.OAuthSecretID,
		&s.AllowedScopes, &scope, &s.CreatedAt, &s.UpdatedAt)
	s.ConnectionScope = store.Scope(scope)
	return s, err
}

// GetSettings implements store.IntegrationSettings.
func (p *Postgres) GetSettings(ctx context.Context, tenantID, integration string) (store.Settings, error) {
	s, err := pgtenant.QueryOne(ctx, p.db, pgtenant.Scope{TenantID: tenantID}, getSettingsSQL,
		[]any{tenantID, integration}, scanSettings)
	return s, interpretError(err)
}

// ListSettings implements store.IntegrationSettings.
func (p *Postgres) ListSettings(ctx context.Context, tenantID string) ([]store.Settings, error) {
	s, err := pgtenant.Query(ctx, p.db, pgtenant.Scope{TenantID: tenantID}, listSettingsSQL, []any{tenantID}, scanSettings)
	return s, interpretError(err)
}

// UpdateSettings implements store.IntegrationSettings.
func (p *Postgres) UpdateSettings(ctx context.Context, tenantID, integration string, change store.SettingsChange) (store.Settings, error) {
	var out store.Settings
	var changeErr error
	err := p.inTenant(ctx, tenantID, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, ensureSettingsSQL, tenantID, integration); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, lockSettingsSQL, tenantID, integration)
		if err != nil {
			return err
		}
		s, err := pgx.CollectExactlyOneRow(rows, scanSettings)
		if err != nil {
			return err
		}
		if changeErr = change(&s); changeErr != nil {
			return changeErr
		}
		rows, err = tx.Query(ctx, updateSettingsSQL, tenantID, integration, s.Enabled, nullString(s.OAuthClientID),
			nullString(s.OAuthSecretID), nonNil(s.AllowedScopes), nullString(string(s.ConnectionScope)))
		if err != nil {
			return err
		}
		out, err = pgx.CollectExactlyOneRow(rows, scanSettings)
		return err
	})
	if changeErr != nil {
		return store.Settings{}, changeErr
	}
	return out, err
}
