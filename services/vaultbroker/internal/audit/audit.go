// Package audit records every access to a tenant's Vault layout in the broker's own
// PostgreSQL database: append-only rows in the tenant's audit_events (see
// migrations/00001_audit_events.sql), readable only within that tenant — one per call. A row
// says who asked (subject, calling service, actor, token id), for what (operation, connection
// id, version), how it ended (gRPC code and a short reason) and when — never a secret value, a
// ciphertext or a token.
package audit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bulkhead/bulkhead/pkg/pgtenant"
)

// Event is one audited access.
type Event struct {
	TenantID string
	// ID is assigned by Append when empty (tests may set it).
	ID         string
	OccurredAt time.Time
	RequestID  string
	// Operation is the RPC's method name, e.g. "GetCredential".
	Operation string
	// Outcome is the gRPC code name the caller received, e.g. "OK", "NOT_FOUND".
	Outcome string
	// Reason is a short machine reason for a refusal or failure ("tenant_mismatch",
	// "permission_denied", "cas_conflict", …); empty on success.
	Reason string
	// Subject is the principal the call acted for, in `sub` form ("user:…", "svc:sync").
	Subject string
	// CallerService is the service that made the hop ("svc:connection"), if any.
	CallerService string
	// Actor is the token's RFC 8693 actor, if any.
	Actor   string
	TokenID string
	// ConnectionID is the credential's connection id for credential operations.
	ConnectionID string
	// Version is the credential or key version involved, when known (0: none).
	Version int64
}

// Store appends and reads audit events through pgtenant, i.e. as the app role in a transaction
// scoped to the event's tenant: row-level security admits only that tenant's rows, and the app
// role holds no UPDATE or DELETE privilege on the table.
type Store struct {
	db *pgtenant.DB
}

// NewStore returns a Store on db (connected as the broker's app role).
func NewStore(db *pgtenant.DB) *Store { return &Store{db: db} }

// ErrInvalid means an event lacks a field every row must have.
var ErrInvalid = errors.New("audit: invalid event")

const insertSQL = `INSERT INTO audit_events (tenant_id, occurred_at, request_id, operation, outcome,
	reason, subject, caller_service, actor, token_id, connection_id, version)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`

// Append writes ev in one round trip (tenant scope and INSERT pipelined). When it returns nil
// the row is committed.
func (s *Store) Append(ctx context.Context, ev Event) error {
	if err := ev.check(); err != nil {
		return err
	}
	if ev.OccurredAt.IsZero() {
		ev.OccurredAt = time.Now()
	}
	var version *int64
	if ev.Version > 0 {
		version = &ev.Version
	}
	_, err := pgtenant.Exec(ctx, s.db, pgtenant.Scope{TenantID: ev.TenantID}, insertSQL,
		ev.TenantID, ev.OccurredAt, ev.RequestID, ev.Operation, ev.Outcome, ev.Reason, ev.Subject,
		ev.CallerService, ev.Actor, ev.TokenID, ev.ConnectionID, version)
	if err != nil {
		return fmt.Errorf("audit: append %s for tenant %s: %w", ev.Operation, ev.TenantID, err)
	}
	return nil
}

// check reports a missing field every row must have.
func (ev *Event) check() error {
	if ev.TenantID == "" || ev.RequestID == "" || ev.Operation == "" || ev.Outcome == "" || ev.Subject == "" {
		return fmt.Errorf("%w: tenant, request id, operation, outcome and subject are required", ErrInvalid)
	}
	return nil
}

// List returns tenantID's most recent events, newest first, at most limit (1–1000).
func (s *Store) List(ctx context.Context, tenantID string, limit int) ([]Event, error) {
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	rows, err := pgtenant.Query(ctx, s.db, pgtenant.Scope{TenantID: tenantID}, `
		SELECT tenant_id::text, id::text, occurred_at, request_id, operation, outcome, reason, subject,
		       caller_service, actor, token_id, connection_id, coalesce(version, 0)
		FROM audit_events ORDER BY occurred_at DESC, id LIMIT $1`, []any{limit},
		func(row pgx.CollectableRow) (Event, error) {
			var e Event
			err := row.Scan(&e.TenantID, &e.ID, &e.OccurredAt, &e.RequestID, &e.Operation, &e.Outcome,
				&e.Reason, &e.Subject, &e.CallerService, &e.Actor, &e.TokenID, &e.ConnectionID, &e.Version)
			return e, err
		})
	if err != nil {
		return nil, fmt.Errorf("audit: list for tenant %s: %w", tenantID, err)
	}
	return rows, nil
}
