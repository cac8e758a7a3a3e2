// Package migrations holds the vault-broker's goose SQL migrations, embedded so the binary
// migrates itself at start-up and tests build their databases from the same files, and Apply,
// which runs them and then narrows the app role's privileges on the append-only audit table.
package migrations

import (
	"context"
	"embed"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"

	"github.com/bulkhead/bulkhead/pkg/pgtenant"
)

// FS holds the numbered migrations at its root, as pgtenant.Migrate expects.
//
//go:embed *.sql
var FS embed.FS

// VersionTable is goose's version table for these migrations, so the broker can share a
// database with other services.
const VersionTable = "vaultbroker_schema_version"

// appendOnlyTables are the tables the app role may only read and append to.
var appendOnlyTables = []string{"audit_events"}

// Apply runs the migrations as the owner role (ownerURL) with pgtenant.Migrate, which grants
// appRole SELECT, INSERT, UPDATE and DELETE on every table, and then revokes UPDATE, DELETE and
// TRUNCATE on the append-only tables from appRole. It must be used instead of pgtenant.Migrate
// alone: pgtenant re-grants on every run, so the revocation has to follow every run too.
// Idempotent.
func Apply(ctx context.Context, ownerURL, appRole string, logger *slog.Logger) error {
	err := pgtenant.Migrate(ctx, ownerURL, FS, pgtenant.MigrateOptions{
		AppRole: appRole, VersionTable: VersionTable, Logger: logger,
	})
	if err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, ownerURL)
	if err != nil {
		return fmt.Errorf("migrations: narrow grants: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, table := range appendOnlyTables {
		// appRole was validated by pgtenant.Migrate; quote it anyway.
		sql := "REVOKE UPDATE, DELETE, TRUNCATE ON " + pgx.Identifier{table}.Sanitize() +
			" FROM " + pgx.Identifier{appRole}.Sanitize()
		if _, err := conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("migrations: narrow grants on %s: %w", table, err)
		}
	}
	return nil
}
