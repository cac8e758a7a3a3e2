// Package postgres implements the connection service's store.Store on PostgreSQL through
// pgtenant: every statement runs in a transaction scoped to the actor's tenant and user, so
// row-level security — not the WHERE clauses here, which repeat the tenant for the planner's
// sake — is what keeps tenants, and users' own connections, apart.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/services/connection/internal/store"
)

// Postgres is the PostgreSQL store. It is safe for concurrent use.
type Postgres struct {
	db *pgtenant.DB
}

var _ store.Store = (*Postgres)(nil)

// New returns a store on db, which must be connected as the connection service's app role.
func New(db *pgtenant.DB) *Postgres {
	return &Postgres{db: db}
}

// setAdminSQL opts the transaction into seeing every user-level connection of its tenant (see
// connection_visible in the migration): the value is the transaction's own start time, so it
// means nothing to any other transaction. It must only run for a verified connection admin.
const setAdminSQL = "SELECT set_config('app.connections_admin', now()::text, true)"

func scopeOf(a store.Actor) pgtenant.Scope {
	return pgtenant.Scope{TenantID: a.TenantID, UserID: a.UserID}
}

// inActor runs fn in a transaction scoped to a's tenant and user, opted into admin visibility
// when a.Admin.
func (p *Postgres) inActor(ctx context.Context, a store.Actor, fn func(pgx.Tx) error) error {
	return interpretError(p.db.InTx(ctx, scopeOf(a), func(tx pgx.Tx) error {
		if a.Admin {
			if _, err := tx.Exec(ctx, setAdminSQL); err != nil {
				return err
			}
		}
		return fn(tx)
	}))
}

// inTenant runs fn in a transaction scoped to tenantID, with no user.
func (p *Postgres) inTenant(ctx context.Context, tenantID string, fn func(pgx.Tx) error) error {
	return interpretError(p.db.InTx(ctx, pgtenant.Scope{TenantID: tenantID}, fn))
}

// interpretError is the one place driver errors become store errors. Errors that are already
// store errors (returned by a transaction body) and errors from callbacks pass through.
func interpretError(err error) error {
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrIdempotencyKeyTaken),
		errors.Is(err, store.ErrRevoked):
		return err
	case errors.Is(err, pgx.ErrNoRows), errors.Is(err, pgtenant.ErrNotFound),
		errors.Is(err, pgtenant.ErrNoTenant), errors.Is(err, pgtenant.ErrInvalidUser):
		return fmt.Errorf("%w: %w", store.ErrNotFound, err)
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "23505": // unique_violation
			if pe.ConstraintName == "connections_idempotency_idx" {
				return fmt.Errorf("%w: %w", store.ErrIdempotencyKeyTaken, err)
			}
		case "22P02": // invalid_text_representation: an id that is not a UUID names nothing
			return fmt.Errorf("%w: %w", store.ErrNotFound, err)
		case "42501": // insufficient_privilege, incl. a row-level security WITH CHECK refusal
			// A write outside what the actor may see: answer like a missing resource.
			return fmt.Errorf("%w: %w", store.ErrNotFound, err)
		}
	}
	// Callers' own errors (from fn) are not driver errors; wrap only what came from here.
	return fmt.Errorf("postgres: %w", err)
}

// timeOrZero turns a nullable timestamp into the zero-means-unset convention of store types.
func timeOrZero(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}

// nullTime is the reverse of timeOrZero, for arguments.
func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func nullString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// nonNil returns s, or an empty slice for nil (NOT NULL array columns).
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// nonNilMap returns m, or an empty map for nil (object-typed jsonb columns).
func nonNilMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}
