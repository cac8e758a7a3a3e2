// Package postgres implements identity's store.Store on PostgreSQL through pgtenant: every
// tenant-owned statement runs in a transaction scoped to the tenant it names, so row-level
// security — not the WHERE clauses here, which repeat the tenant for the planner's sake — is
// what keeps tenants apart.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/services/identity/internal/store"
)

// Postgres is the PostgreSQL store. It is safe for concurrent use.
type Postgres struct {
	db *pgtenant.DB
}

var _ store.Store = (*Postgres)(nil)

// New returns a store on db, which must be connected as identity's app role.
func New(db *pgtenant.DB) *Postgres {
	return &Postgres{db: db}
}

// inTenant runs fn in a transaction scoped to tenantID. An id that is not a UUID cannot name
// any tenant: it answers ErrNotFound without touching the database.
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
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrAlreadyExists),
		errors.Is(err, store.ErrLastOwner), errors.Is(err, store.ErrIdempotencyKeyTaken):
		return err
	case errors.Is(err, pgx.ErrNoRows), errors.Is(err, pgtenant.ErrNoTenant), errors.Is(err, pgtenant.ErrInvalidUser):
		return fmt.Errorf("%w: %w", store.ErrNotFound, err)
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "23505": // unique_violation
			return fmt.Errorf("%w: %s", store.ErrAlreadyExists, pe.ConstraintName)
		case "23503": // foreign_key_violation: the tenant (or owner) the row points at is missing
			return fmt.Errorf("%w: %s", store.ErrNotFound, pe.ConstraintName)
		case "22P02": // invalid_text_representation: an id that is not a UUID names nothing
			return fmt.Errorf("%w: %w", store.ErrNotFound, err)
		case "42501": // insufficient_privilege, incl. a row-level security WITH CHECK refusal
			// A write aimed outside the transaction's tenant: answer like a missing resource.
			return fmt.Errorf("%w: %w", store.ErrNotFound, err)
		}
	}
	return fmt.Errorf("postgres: %w", err)
}

// cursorArgs renders a page's cursor as two nullable query arguments.
func cursorArgs(p store.Page) (any, any) {
	if p.After == nil {
		return nil, nil
	}
	return p.After.CreatedAt, p.After.ID
}

// limitArg asks for one row more than the page, to learn whether there is a next page.
func limitArg(p store.Page) int {
	size := p.Size
	if size <= 0 {
		size = 100
	}
	return size + 1
}

// paginate trims the extra row limitArg asked for and returns the cursor of the last row kept.
func paginate[T any](items []T, p store.Page, cursor func(T) store.Cursor) ([]T, *store.Cursor) {
	size := limitArg(p) - 1
	if len(items) <= size {
		return items, nil
	}
	items = items[:size]
	c := cursor(items[len(items)-1])
	return items, &c
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

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

const insertEventSQL = `INSERT INTO outbox (tenant_id, id, event_type, payload)
VALUES ($1, gen_random_uuid(), $2, $3)`

func insertEvent(ctx context.Context, tx pgx.Tx, tenantID string, e store.Event) error {
	if _, err := tx.Exec(ctx, insertEventSQL, tenantID, e.Type, e.Payload); err != nil {
		return fmt.Errorf("insert %s event: %w", e.Type, err)
	}
	return nil
}

// lockTenantSQL serializes membership changes within one tenant: the "at least one owner"
// rule reads all owners and then writes, which two concurrent transactions could each pass.
const lockTenantSQL = `SELECT status FROM tenants WHERE id = $1 FOR UPDATE`

func lockTenant(ctx context.Context, tx pgx.Tx, tenantID string) (store.TenantStatus, error) {
	var status store.TenantStatus
	if err := tx.QueryRow(ctx, lockTenantSQL, tenantID).Scan(&status); err != nil {
		return "", err
	}
	return status, nil
}
