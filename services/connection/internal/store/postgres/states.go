package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/services/connection/internal/store"
)

const (
	deleteExpiredStatesSQL = `DELETE FROM oauth_states WHERE tenant_id = $1 AND expires_at < $2`

	insertStateSQL = `INSERT INTO oauth_states (tenant_id, id, secret_hash, principal, user_id, integration,
		scope, connection_id, requested_scopes, fields, tags, return_url, oauth_client_id,
		verifier_ciphertext, created_at, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)`

	// consumeStateSQL deletes the state only when the secret matches: a guessed id alone can
	// neither read nor cancel someone's authorization. The comparison is on SHA-256 digests
	// of 256-bit random secrets, so its timing reveals nothing usable.
	consumeStateSQL = `DELETE FROM oauth_states
		WHERE tenant_id = $1 AND id = $2 AND secret_hash = $3
		RETURNING tenant_id::text, id::text, secret_hash, principal, coalesce(user_id::text, ''),
			integration, scope, coalesce(connection_id::text, ''), requested_scopes, fields, tags,
			return_url, coalesce(oauth_client_id, ''), verifier_ciphertext, created_at, expires_at`
)

// CreateState implements store.States.
func (p *Postgres) CreateState(ctx context.Context, s store.State) error {
	return p.inTenant(ctx, s.TenantID, func(tx pgx.Tx) error {
		// Abandoned flows are cleaned up by the next one in the same tenant.
		if _, err := tx.Exec(ctx, deleteExpiredStatesSQL, s.TenantID, s.CreatedAt); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, insertStateSQL, s.TenantID, s.ID, s.SecretHash, s.Principal, nullString(s.UserID),
			s.Integration, string(s.Scope), nullString(s.ConnectionID), nonNil(s.RequestedScopes),
			nonNilMap(s.Fields), nonNil(s.Tags), s.ReturnURL, nullString(s.OAuthClientID),
			s.VerifierCiphertext, s.CreatedAt, s.ExpiresAt)
		return err
	})
}

// ConsumeState implements store.States.
func (p *Postgres) ConsumeState(ctx context.Context, tenantID, id string, secretHash []byte, now time.Time) (store.State, error) {
	s, err := pgtenant.QueryOne(ctx, p.db, pgtenant.Scope{TenantID: tenantID}, consumeStateSQL,
		[]any{tenantID, id, secretHash}, func(row pgx.CollectableRow) (store.State, error) {
			var s store.State
			var scope string
			err := row.Scan(&s.TenantID, &s.ID, &s.SecretHash, &s.Principal, &s.UserID, &s.Integration,
				&scope, &s.ConnectionID, &s.RequestedScopes, &s.Fields, &s.Tags, &s.ReturnURL,
				&s.OAuthClientID, &s.VerifierCiphertext, &s.CreatedAt, &s.ExpiresAt)
			s.Scope = store.Scope(scope)
			return s, err
		})
	if err != nil {
		return store.State{}, interpretError(err)
	}
	if !now.Before(s.ExpiresAt) {
		return store.State{}, store.ErrNotFound // deleted above: expired states are single-use too
	}
	return s, nil
}
