package postgres

import (
	"context"
	"errors"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/services/connection/internal/store"
)

// connCols are a connection's columns (alias c) plus the tenant's enabled setting for its
// integration. The setting is a scalar subquery rather than a join so the same list serves
// SELECT and UPDATE … RETURNING.
const connCols = `c.tenant_id::text, c.id::text, c.integration, c.auth_type, c.scope,
	coalesce(c.owner_user_id::text, ''), c.creator, c.status,
	c.last_refresh_at, c.last_failure_at, c.last_failure_reason, c.consecutive_failures,
	c.access_expires_at, c.refresh_expires_at, c.next_check_at,
	c.fields, c.tags, c.granted_scopes,
	c.revocation_state, c.revocation_attempts, c.revocation_next_at,
	c.revocation_failure_reason, c.revoked_at,
	c.credential_version, coalesce(c.idempotency_key, ''), c.created_at, c.updated_at,
	coalesce((SELECT s.enabled FROM integration_settings s
	          WHERE s.tenant_id = c.tenant_id AND s.integration = c.integration), true)`

const (
	insertConnectionSQL = `INSERT INTO connections AS c (tenant_id, id, integration, auth_type, scope,
		owner_user_id, creator, fields, tags, granted_scopes, credential_version,
		access_expires_at, refresh_expires_at, next_check_at, last_refresh_at, idempotency_key)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
		RETURNING ` + connCols

	getConnectionSQL = `SELECT ` + connCols + ` FROM connections c WHERE c.tenant_id = $1 AND c.id = $2`

	getByIdempotencySQL = `SELECT ` + connCols + ` FROM connections c
		WHERE c.tenant_id = $1 AND c.idempotency_key = $2`

	lockConnectionSQL = getConnectionSQL + ` FOR UPDATE OF c`

	// listConnectionsSQL pages newest first; NULL filters match everything.
	listConnectionsSQL = `SELECT ` + connCols + ` FROM connections c
		WHERE c.tenant_id = $1
		  AND ($2::text IS NULL OR c.integration = $2)
		  AND ($3::text IS NULL OR c.scope = $3)
		  AND ($4::text IS NULL OR c.status = $4)
		  AND ($5::timestamptz IS NULL OR (c.created_at, c.id) < ($5, $6::uuid))
		ORDER BY c.created_at DESC, c.id DESC
		LIMIT $7`

	// recordRefreshSQL: a refresh proves the credential works, so a connection that needed
	// re-authorization is active again; a disabled one stays disabled.
	recordRefreshSQL = `UPDATE connections AS c SET
		credential_version = $3, access_expires_at = $4, refresh_expires_at = $5, next_check_at = $6,
		granted_scopes = coalesce($7, c.granted_scopes), last_refresh_at = $8,
		consecutive_failures = 0,
		status = CASE WHEN c.status = 'needs_reauth' THEN 'active' ELSE c.status END,
		updated_at = now()
		WHERE c.tenant_id = $1 AND c.id = $2
		RETURNING ` + connCols

	recordFailureSQL = `UPDATE connections AS c SET
		consecutive_failures = c.consecutive_failures + 1,
		last_failure_at = $3, last_failure_reason = $4,
		status = CASE WHEN $5 AND c.status = 'active' THEN 'needs_reauth' ELSE c.status END,
		next_check_at = coalesce($6, c.next_check_at),
		updated_at = now()
		WHERE c.tenant_id = $1 AND c.id = $2
		RETURNING ` + connCols

	reauthorizeSQL = `UPDATE connections AS c SET
		credential_version = $3, access_expires_at = $4, refresh_expires_at = $5, next_check_at = $6,
		granted_scopes = coalesce($7, c.granted_scopes), fields = coalesce($8, c.fields),
		last_refresh_at = $9, consecutive_failures = 0,
		status = CASE WHEN c.status = 'disabled' THEN 'disabled' ELSE 'active' END,
		updated_at = now()
		WHERE c.tenant_id = $1 AND c.id = $2
		RETURNING ` + connCols

	setStatusSQL = `UPDATE connections AS c SET status = $3, updated_at = now()
		WHERE c.tenant_id = $1 AND c.id = $2
		RETURNING ` + connCols

	revokeSQL = `UPDATE connections AS c SET status = 'revoked', revocation_state = $3,
		revocation_next_at = $4,
		revocation_attempts = c.revocation_attempts + CASE WHEN $3 = 'not_supported' THEN 0 ELSE 1 END,
		revoked_at = coalesce(c.revoked_at, $5), updated_at = now()
		WHERE c.tenant_id = $1 AND c.id = $2
		RETURNING ` + connCols

	failRevocationSQL = `UPDATE connections AS c SET status = 'revoked', revocation_state = 'failed',
		revocation_next_at = NULL, revocation_failure_reason = $3,
		revoked_at = coalesce(c.revoked_at, $4), updated_at = now()
		WHERE c.tenant_id = $1 AND c.id = $2
		RETURNING ` + connCols

	insertEventSQL = `INSERT INTO outbox (tenant_id, connection_id, event_type, payload) VALUES ($1, $2, $3, $4)`

	listEventsSQL = `SELECT id::text, event_type, connection_id::text, payload, created_at FROM outbox
		WHERE tenant_id = $1 AND connection_id = $2 ORDER BY seq`
)

// scanConnection reads a row of connCols.
func scanConnection(row pgx.CollectableRow) (store.Connection, error) {
	var (
		c                                 store.Connection
		authType, scope, status, revState string
		lastRefresh, lastFailure          *time.Time
		accessExp, refreshExp, nextCheck  *time.Time
		revNext, revokedAt                *time.Time
	)
	err := row.Scan(&c.TenantID, &c.ID, &c.Integration, &authType, &scope,
		&c.OwnerUserID, &c.Creator, &status,
		&lastRefresh, &lastFailure, &c.LastFailureReason, &c.ConsecutiveFailures,
		&accessExp, &refreshExp, &nextCheck,
		&c.Fields, &c.Tags, &c.GrantedScopes,
		&revState, &c.RevocationAttempts, &revNext,
		&c.RevocationFailureReason, &revokedAt,
		&c.CredentialVersion, &c.IdempotencyKey, &c.CreatedAt, &c.UpdatedAt,
		&c.IntegrationEnabled)
	if err != nil {
		return store.Connection{}, err
	}
	c.AuthType, c.Scope, c.Status = store.AuthType(authType), store.Scope(scope), store.Status(status)
	c.RevocationState = store.RevocationState(revState)
	c.LastRefreshAt, c.LastFailureAt = timeOrZero(lastRefresh), timeOrZero(lastFailure)
	c.AccessExpiresAt, c.RefreshExpiresAt, c.NextCheckAt = timeOrZero(accessExp), timeOrZero(refreshExp), timeOrZero(nextCheck)
	c.RevocationNextAt, c.RevokedAt = timeOrZero(revNext), timeOrZero(revokedAt)
	return c, nil
}

// insertEvent appends an outbox event for c in tx. The payload names the connection and what
// happened; it never carries a credential.
func insertEvent(ctx context.Context, tx pgx.Tx, c store.Connection, t store.EventType, extra map[string]any) error {
	payload := map[string]any{
		"tenant_id":     c.TenantID,
		"connection_id": c.ID,
		"integration":   c.Integration,
		"scope":         string(c.Scope),
		"status":        string(c.Status),
	}
	if c.OwnerUserID != "" {
		payload["owner_user_id"] = c.OwnerUserID
	}
	for k, v := range extra {
		payload[k] = v
	}
	_, err := tx.Exec(ctx, insertEventSQL, c.TenantID, c.ID, string(t), payload)
	return err
}

// CreateConnection implements store.Connections.
func (p *Postgres) CreateConnection(ctx context.Context, a store.Actor, in store.NewConnection) (store.Connection, error) {
	var out store.Connection
	err := p.inActor(ctx, a, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, insertConnectionSQL, a.TenantID, in.ID, in.Integration, string(in.AuthType),
			string(in.Scope), nullString(in.OwnerUserID), in.Creator, nonNilMap(in.Fields), nonNil(in.Tags),
			nonNil(in.GrantedScopes), in.CredentialVersion, nullTime(in.AccessExpiresAt),
			nullTime(in.RefreshExpiresAt), nullTime(in.NextCheckAt), nullTime(in.At), nullString(in.IdempotencyKey))
		if err != nil {
			return err
		}
		if out, err = pgx.CollectExactlyOneRow(rows, scanConnection); err != nil {
			return err
		}
		return insertEvent(ctx, tx, out, store.EventCreated, map[string]any{"auth_type": string(out.AuthType), "creator": out.Creator})
	})
	return out, err
}

// GetConnection implements store.Connections. A non-admin read is one round trip (the scope
// and the query in one pipelined batch); it is the first step of every GetAccessToken.
func (p *Postgres) GetConnection(ctx context.Context, a store.Actor, id string) (store.Connection, error) {
	return p.getOne(ctx, a, getConnectionSQL, a.TenantID, id)
}

// GetConnectionByIdempotencyKey implements store.Connections.
func (p *Postgres) GetConnectionByIdempotencyKey(ctx context.Context, a store.Actor, key string) (store.Connection, error) {
	return p.getOne(ctx, a, getByIdempotencySQL, a.TenantID, key)
}

func (p *Postgres) getOne(ctx context.Context, a store.Actor, sql string, args ...any) (store.Connection, error) {
	if !a.Admin {
		c, err := pgtenant.QueryOne(ctx, p.db, scopeOf(a), sql, args, scanConnection)
		return c, interpretError(err)
	}
	var out store.Connection
	err := p.inActor(ctx, a, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, sql, args...)
		if err != nil {
			return err
		}
		out, err = pgx.CollectExactlyOneRow(rows, scanConnection)
		return err
	})
	return out, err
}

// ListConnections implements store.Connections.
func (p *Postgres) ListConnections(ctx context.Context, a store.Actor, f store.Filter, pg store.Page) ([]store.Connection, *store.Cursor, error) {
	size := pg.Size
	if size <= 0 {
		size = 100
	}
	var afterAt *time.Time
	var afterID *string
	if pg.After != nil {
		afterAt, afterID = &pg.After.CreatedAt, &pg.After.ID
	}
	args := []any{a.TenantID, nullString(f.Integration), nullString(string(f.Scope)), nullString(string(f.Status)),
		afterAt, afterID, size + 1}
	var conns []store.Connection
	var err error
	if !a.Admin {
		conns, err = pgtenant.Query(ctx, p.db, scopeOf(a), listConnectionsSQL, args, scanConnection)
		err = interpretError(err)
	} else {
		err = p.inActor(ctx, a, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, listConnectionsSQL, args...)
			if err != nil {
				return err
			}
			conns, err = pgx.CollectRows(rows, scanConnection)
			return err
		})
	}
	if err != nil {
		return nil, nil, err
	}
	if len(conns) <= size {
		return conns, nil, nil
	}
	conns = conns[:size]
	last := conns[size-1]
	return conns, &store.Cursor{CreatedAt: last.CreatedAt, ID: last.ID}, nil
}

// WithLockedConnection implements store.Connections.
func (p *Postgres) WithLockedConnection(ctx context.Context, a store.Actor, id string, fn func(context.Context, store.Locked) error) error {
	var fnErr error
	err := p.inActor(ctx, a, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, lockConnectionSQL, a.TenantID, id)
		if err != nil {
			return err
		}
		c, err := pgx.CollectExactlyOneRow(rows, scanConnection)
		if err != nil {
			return err
		}
		fnErr = fn(ctx, &locked{tx: tx, c: c})
		return fnErr
	})
	if fnErr != nil {
		// fn's own error, unchanged (it rolled the transaction back).
		return fnErr
	}
	return err
}

// Events implements store.Connections.
func (p *Postgres) Events(ctx context.Context, tenantID, connectionID string) ([]store.Event, error) {
	evs, err := pgtenant.Query(ctx, p.db, pgtenant.Scope{TenantID: tenantID}, listEventsSQL,
		[]any{tenantID, connectionID}, func(row pgx.CollectableRow) (store.Event, error) {
			var e store.Event
			var t string
			err := row.Scan(&e.ID, &t, &e.ConnectionID, &e.Payload, &e.CreatedAt)
			e.Type = store.EventType(t)
			return e, err
		})
	return evs, interpretError(err)
}

// locked is a connection row locked in tx.
type locked struct {
	tx pgx.Tx
	c  store.Connection
}

var _ store.Locked = (*locked)(nil)

func (l *locked) Connection() store.Connection { return l.c }

// update runs one UPDATE … RETURNING of the locked row and appends its events.
func (l *locked) update(ctx context.Context, sql string, args []any, events ...eventSpec) (store.Connection, error) {
	rows, err := l.tx.Query(ctx, sql, append([]any{l.c.TenantID, l.c.ID}, args...)...)
	if err != nil {
		return store.Connection{}, interpretError(err)
	}
	c, err := pgx.CollectExactlyOneRow(rows, scanConnection)
	if err != nil {
		return store.Connection{}, interpretError(err)
	}
	for _, e := range events {
		if err := insertEvent(ctx, l.tx, c, e.t, e.extra); err != nil {
			return store.Connection{}, interpretError(err)
		}
	}
	l.c = c
	return c, nil
}

type eventSpec struct {
	t     store.EventType
	extra map[string]any
}

// failing reports whether c was failing before a success: recovered is emitted then.
func failing(c store.Connection) bool {
	return c.ConsecutiveFailures > 0 || c.Status == store.StatusNeedsReauth
}

func (l *locked) RecordRefresh(ctx context.Context, u store.CredentialUpdate) (store.Connection, error) {
	if l.c.Status == store.StatusRevoked {
		return store.Connection{}, store.ErrRevoked
	}
	events := []eventSpec{{t: store.EventRefreshed, extra: map[string]any{"credential_version": u.CredentialVersion}}}
	if failing(l.c) {
		events = append(events, eventSpec{t: store.EventRecovered, extra: map[string]any{"after_failures": l.c.ConsecutiveFailures}})
	}
	return l.update(ctx, recordRefreshSQL, []any{u.CredentialVersion, nullTime(u.AccessExpiresAt),
		nullTime(u.RefreshExpiresAt), nullTime(u.NextCheckAt), scopesArg(u.GrantedScopes), u.At}, events...)
}

func (l *locked) RecordFailure(ctx context.Context, f store.Failure) (store.Connection, error) {
	if l.c.Status == store.StatusRevoked {
		return store.Connection{}, store.ErrRevoked
	}
	reason := cut(f.Reason)
	return l.update(ctx, recordFailureSQL, []any{f.At, reason, f.NeedsReauth, nullTime(f.NextCheckAt)},
		eventSpec{t: store.EventRefreshFailed, extra: map[string]any{"reason": reason, "needs_reauth": f.NeedsReauth}})
}

func (l *locked) Reauthorize(ctx context.Context, u store.CredentialUpdate) (store.Connection, error) {
	if l.c.Status == store.StatusRevoked {
		return store.Connection{}, store.ErrRevoked
	}
	events := []eventSpec{{t: store.EventReauthorized, extra: map[string]any{"credential_version": u.CredentialVersion}}}
	if failing(l.c) {
		events = append(events, eventSpec{t: store.EventRecovered, extra: map[string]any{"after_failures": l.c.ConsecutiveFailures}})
	}
	var fields any
	if u.Fields != nil {
		fields = u.Fields
	}
	return l.update(ctx, reauthorizeSQL, []any{u.CredentialVersion, nullTime(u.AccessExpiresAt),
		nullTime(u.RefreshExpiresAt), nullTime(u.NextCheckAt), scopesArg(u.GrantedScopes), fields, u.At}, events...)
}

func (l *locked) SetEnabled(ctx context.Context, enabled bool, _ time.Time) (store.Connection, error) {
	switch {
	case l.c.Status == store.StatusRevoked:
		return store.Connection{}, store.ErrRevoked
	case enabled && l.c.Status == store.StatusDisabled:
		return l.update(ctx, setStatusSQL, []any{string(store.StatusActive)}, eventSpec{t: store.EventEnabled})
	case !enabled && l.c.Status != store.StatusDisabled:
		return l.update(ctx, setStatusSQL, []any{string(store.StatusDisabled)}, eventSpec{t: store.EventDisabled})
	}
	return l.c, nil // already as asked
}

func (l *locked) Revoke(ctx context.Context, state store.RevocationState, nextAttempt, at time.Time) (store.Connection, error) {
	switch state {
	case store.RevocationPending, store.RevocationConfirmed, store.RevocationNotSupported:
	default:
		return store.Connection{}, errors.New("postgres: Revoke needs a revocation state")
	}
	if l.c.Status == store.StatusRevoked && l.c.RevocationState != store.RevocationPending {
		return l.c, nil // final already
	}
	var events []eventSpec
	if l.c.Status != store.StatusRevoked {
		events = append(events, eventSpec{t: store.EventRevoked})
	}
	var next *time.Time
	if state == store.RevocationPending {
		next = nullTime(nextAttempt)
	}
	c, err := l.update(ctx, revokeSQL, []any{string(state), next, at}, events...)
	if err != nil {
		return store.Connection{}, err
	}
	return c, nil
}

func (l *locked) FailRevocation(ctx context.Context, reason string, at time.Time) (store.Connection, error) {
	reason = cut(reason)
	if reason == "" {
		return store.Connection{}, errors.New("postgres: FailRevocation needs a reason")
	}
	if l.c.Status == store.StatusRevoked && l.c.RevocationState.Final() {
		return l.c, nil // final already
	}
	var events []eventSpec
	if l.c.Status != store.StatusRevoked {
		events = append(events, eventSpec{t: store.EventRevoked})
	}
	events = append(events, eventSpec{t: store.EventRevocationFailed, extra: map[string]any{"reason": reason}})
	return l.update(ctx, failRevocationSQL, []any{reason, at}, events...)
}

// cut bounds a failure reason to the columns' limit, on a rune boundary.
func cut(reason string) string {
	if len(reason) <= store.MaxFailureReason {
		return reason
	}
	reason = reason[:store.MaxFailureReason]
	for !utf8.ValidString(reason) {
		reason = reason[:len(reason)-1]
	}
	return reason
}

func (l *locked) Delete(ctx context.Context, _ time.Time) error {
	if l.c.Status != store.StatusRevoked || !l.c.RevocationState.Final() {
		return store.ErrNotDeletable
	}
	tag, err := l.tx.Exec(ctx, deleteConnectionSQL, l.c.TenantID, l.c.ID)
	if err != nil {
		return interpretError(err)
	}
	if tag.RowsAffected() != 1 {
		// Row-level security kept the row: not this actor's to delete.
		return store.ErrNotFound
	}
	if err := insertEvent(ctx, l.tx, l.c, store.EventDeleted, nil); err != nil {
		return interpretError(err)
	}
	return nil
}

const deleteConnectionSQL = `DELETE FROM connections WHERE tenant_id = $1 AND id = $2`

// scopesArg is NULL for nil (keep the stored scopes) and the list otherwise.
func scopesArg(s []string) any {
	if s == nil {
		return nil
	}
	return s
}
