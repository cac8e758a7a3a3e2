// Package migrations holds the sync service's goose SQL migrations, embedded so the binary
// migrates itself and tests build their databases from the same files, and Apply, which also
// runs River's own migrations.
package migrations

import (
	"context"
	"embed"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/bulkhead/bulkhead/pkg/pgtenant"
)

// FS holds the numbered migrations at its root, as pgtenant.Migrate expects.
//
//go:embed *.sql
var FS embed.FS

// VersionTable is goose's version table for these migrations, so the service can share a
// database with other services.
const VersionTable = "sync_schema_version"

// Apply migrates the database at ownerURL (the owner role) to the current schema: River's
// tables with rivermigrate (River keeps its own version table, river_migration), then the
// service's migrations with pgtenant.Migrate, which finally grants appRole DML on every table
// the owner owns — River's included, so the service can work jobs as its app role. Idempotent.
//
// River's tables carry no tenant_id and no row-level security: a job row holds ids only (the
// tenant, the connection, the model), never records or credentials.
func Apply(ctx context.Context, ownerURL, appRole string, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := migrateRiver(ctx, ownerURL, logger); err != nil {
		return err
	}
	return pgtenant.Migrate(ctx, ownerURL, FS, pgtenant.MigrateOptions{
		AppRole: appRole, VersionTable: VersionTable, Logger: logger,
	})
}

func migrateRiver(ctx context.Context, ownerURL string, logger *slog.Logger) error {
	cfg, err := pgxpool.ParseConfig(ownerURL)
	if err != nil {
		return fmt.Errorf("migrations: river: %w", err)
	}
	cfg.MaxConns = 2
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("migrations: river: %w", err)
	}
	defer pool.Close()
	migrator, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Logger: logger})
	if err != nil {
		return fmt.Errorf("migrations: river: %w", err)
	}
	res, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil)
	if err != nil {
		return fmt.Errorf("migrations: river: %w", err)
	}
	for _, v := range res.Versions {
		logger.InfoContext(ctx, "river migration applied", "version", v.Version, "took", v.Duration)
	}
	return nil
}
