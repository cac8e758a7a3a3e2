package pgtenant

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrNotFound is returned by QueryOne when the scoped query matched no row: a missing row and
// another tenant's row look exactly alike. It wraps pgx.ErrNoRows, so code (and
// apierr.ToStatus) that checks for that sees it too.
var ErrNotFound = fmt.Errorf("pgtenant: not found: %w", pgx.ErrNoRows)

// setScopeSQL sets the scope for the rest of the batch's implicit transaction. Parameters, not
// inlined values: a batch sends them in the same flight anyway, and the prepared statement is
// shared by every tenant.
const setScopeSQL = "SELECT set_config('app.tenant_id', $1, true), " +
	"set_config('app.user_id', $2, true), set_config('app.platform', '', true)"

// Query runs one statement scoped to scope and collects its rows with scan (for example
// pgx.RowToStructByName[T]), in one network round trip once its statement is prepared.
//
// The scope and the statement travel as one pgx.Batch: pgx pipelines both and ends the batch
// with a single Sync message, and PostgreSQL runs everything before a Sync as one implicit
// transaction — so the transaction-local set_config applies to the statement and is gone when
// the batch ends. Use DB.InTx instead when several statements must see each other's writes
// under one explicit transaction or when you need to branch on what you read.
func Query[T any](ctx context.Context, db *DB, scope Scope, sql string, args []any, scan pgx.RowToFunc[T]) ([]T, error) {
	var out []T
	err := db.batch(ctx, scope, sql, args, func(br pgx.BatchResults) error {
		rows, err := br.Query()
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, scan)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// QueryOne is Query for a statement that must return exactly one row (a point read by id). No
// row returns ErrNotFound; more than one returns an error wrapping pgx.ErrTooManyRows.
func QueryOne[T any](ctx context.Context, db *DB, scope Scope, sql string, args []any, scan pgx.RowToFunc[T]) (T, error) {
	var out T
	err := db.batch(ctx, scope, sql, args, func(br pgx.BatchResults) error {
		rows, err := br.Query()
		if err != nil {
			return err
		}
		out, err = pgx.CollectExactlyOneRow(rows, scan)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		return err
	})
	if err != nil {
		var zero T
		return zero, err
	}
	return out, nil
}

// Exec runs one data-changing statement scoped to scope in one round trip (see Query for why
// the batch is one transaction) and returns its command tag. An INSERT or UPDATE that would
// write a row of another tenant fails with SQLSTATE 42501; an UPDATE or DELETE of another
// tenant's rows affects 0 rows.
func Exec(ctx context.Context, db *DB, scope Scope, sql string, args ...any) (pgconn.CommandTag, error) {
	var tag pgconn.CommandTag
	err := db.batch(ctx, scope, sql, args, func(br pgx.BatchResults) error {
		var err error
		tag, err = br.Exec()
		return err
	})
	return tag, err
}

// batch sends the scope and one statement as one pgx.Batch and lets read consume the
// statement's result.
func (db *DB) batch(ctx context.Context, scope Scope, sql string, args []any, read func(pgx.BatchResults) error) error {
	tenant, user, err := scope.canonical()
	if err != nil {
		return err
	}
	b := &pgx.Batch{}
	b.Queue(setScopeSQL, tenant, user)
	b.Queue(sql, args...)
	br := db.pool.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		_ = br.Close()
		return fmt.Errorf("pgtenant: set scope: %w", err)
	}
	if err := read(br); err != nil {
		_ = br.Close()
		return err
	}
	// Close reads up to the Sync, where the implicit transaction commits: a commit-time error
	// (a deferred constraint) surfaces here.
	if err := br.Close(); err != nil {
		return fmt.Errorf("pgtenant: %w", err)
	}
	return nil
}
