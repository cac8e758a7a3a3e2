package pgtenant

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// rollbackTimeout bounds a rollback sent after the caller's context is done: the rollback must
// still go out (a cancelled context would otherwise skip it), but not hang on a dead network.
const rollbackTimeout = 5 * time.Second

// DB runs tenant-scoped transactions on a pool connected as a service's app role. It does not
// expose the pool: every statement goes through a transaction that has its scope set.
type DB struct {
	pool *pgxpool.Pool
}

// New wraps pool, which must connect as the service's app role (not the owner, not a
// superuser: those would bypass or own the policies). DB.Close closes pool.
func New(pool *pgxpool.Pool) *DB {
	return &DB{pool: pool}
}

// Connect opens a pool to url (the app role's URL) and checks that the server answers.
func Connect(ctx context.Context, url string) (*DB, error) {
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("pgtenant: connect: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("pgtenant: connect: %w", err)
	}
	return New(pool), nil
}

// Close closes the underlying pool, waiting for connections in use to be returned.
func (db *DB) Close() {
	db.pool.Close()
}

// InTx runs fn in a transaction scoped to scope's tenant (and user): row-level security shows
// fn that tenant's rows only and rejects writes of any other tenant's rows. The transaction
// commits when fn returns nil and rolls back when fn returns an error or panics (the panic is
// re-raised). fn's error is returned unchanged. An invalid scope returns an error wrapping
// ErrNoTenant (or ErrInvalidUser) without touching the database.
//
// fn must not commit or roll back tx itself, nor keep it after it returns.
func (db *DB) InTx(ctx context.Context, scope Scope, fn func(pgx.Tx) error) error {
	tenant, user, err := scope.canonical()
	if err != nil {
		return err
	}
	// Inlining the ids (rather than binding them) is what puts BEGIN and the scope in one
	// round trip: pgx sends an argument-less Exec with the simple protocol, which carries
	// several statements in one message. It is safe because canonical() returned
	// uuid.UUID.String() output — hex digits and hyphens only — never the caller's string.
	// The platform flag is cleared explicitly so a session-level value, set by anyone, cannot
	// widen this transaction.
	begin := "BEGIN; SELECT set_config('app.tenant_id', '" + tenant + "', true), " +
		"set_config('app.user_id', '" + user + "', true), set_config('app.platform', '', true)"
	return db.run(ctx, begin, fn)
}

// platformBegin and globalBegin clear the tenant and user explicitly (see InTx).
const (
	platformBegin = "BEGIN; SELECT set_config('app.tenant_id', '', true), " +
		"set_config('app.user_id', '', true), set_config('app.platform', 'on', true)"
	globalBegin = "BEGIN; SELECT set_config('app.tenant_id', '', true), " +
		"set_config('app.user_id', '', true), set_config('app.platform', '', true)"
)

// InPlatformTx runs fn in a transaction with no tenant and `app.platform` = 'on', for a
// platform operator's reads across tenants. Only tables with a policy that explicitly admits
// `current_setting('app.platform', true) = 'on'` show rows (see the package doc); every other
// tenant table looks empty and rejects writes. Callers must have authorized the operator.
func (db *DB) InPlatformTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return db.run(ctx, platformBegin, fn)
}

// InGlobalTx runs fn in a transaction with no tenant, user or platform flag, for tables that
// are not tenant-scoped (idempotency records, outbox, job queues). Tenant tables return no rows
// and reject every write there: that is the point, not a bug to work around.
func (db *DB) InGlobalTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return db.run(ctx, globalBegin, fn)
}

func (db *DB) run(ctx context.Context, begin string, fn func(pgx.Tx) error) error {
	tx, err := db.pool.BeginTx(ctx, pgx.TxOptions{BeginQuery: begin})
	if err != nil {
		// If BEGIN ran but the scope statement failed, the connection is left inside a
		// transaction; pgxpool destroys such a connection on release instead of reusing it.
		return fmt.Errorf("pgtenant: begin: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			// Runs on error and on panic; after a successful Commit there is nothing to undo.
			rollback(ctx, tx)
		}
	}()
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("pgtenant: commit: %w", err)
	}
	committed = true
	return nil
}

// rollback ends tx even when ctx is already done. Errors are dropped: the caller already has
// the error that caused the rollback, and a rollback failure closes the connection, which the
// pool then discards.
func rollback(ctx context.Context, tx pgx.Tx) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
	defer cancel()
	_ = tx.Rollback(ctx)
}
