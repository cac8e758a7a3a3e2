package pgtenant

import (
	"context"
	"fmt"
	"hash/fnv"
	"io/fs"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// DefaultVersionTable is goose's own default version table name.
const DefaultVersionTable = "goose_db_version"

// MigrateOptions configures Migrate.
type MigrateOptions struct {
	// AppRole is granted, after the migrations ran, what the service needs and nothing more
	// (see Migrate). Empty skips the grants.
	AppRole string
	// VersionTable is goose's version table. Give each service its own (e.g.
	// "identity_schema_version") so several services can share one database. Default
	// DefaultVersionTable.
	VersionTable string
	// Logger receives one line per applied migration; nil discards them.
	Logger *slog.Logger
}

// Migrate applies the goose SQL migrations at the root of migrations (use fs.Sub for an
// embedded subdirectory) connecting as the owner role, then — when opts.AppRole is set —
// grants the app role, as the owner:
//   - CONNECT on the database (when the owner owns it) and USAGE on schema public and on every
//     schema the owner owns;
//   - SELECT, INSERT, UPDATE, DELETE on every table and view the owner owns (SELECT on
//     materialized views), USAGE and SELECT on its sequences;
//   - nothing on the version table, so the service cannot rewrite its migration history;
//
// and revokes CREATE on schema public from PUBLIC, so the app role cannot create objects (it
// would own them and escape FORCE RLS). The grants are re-run on every call, so a table added
// by any migration is covered without each migration repeating them. Narrow what the app role
// may do to a table with per-command policies (`CREATE POLICY … FOR SELECT`): under FORCE RLS a
// command with no policy matches no row.
//
// Concurrent calls against one database serialize on a session advisory lock.
func Migrate(ctx context.Context, ownerURL string, migrations fs.FS, opts MigrateOptions) error {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	table := opts.VersionTable
	if table == "" {
		table = DefaultVersionTable
	}
	if opts.AppRole != "" {
		if err := validName(opts.AppRole); err != nil {
			return err
		}
	}
	cfg, err := pgx.ParseConfig(ownerURL)
	if err != nil {
		return fmt.Errorf("pgtenant: migrate: %w", err)
	}
	// goose speaks database/sql; stdlib adapts pgx to it.
	sqlDB := stdlib.OpenDB(*cfg)
	defer sqlDB.Close()

	h := fnv.New64a()
	h.Write([]byte("pgtenant.migrate:" + table))
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(int64(h.Sum64())))
	if err != nil {
		return fmt.Errorf("pgtenant: migrate: %w", err)
	}
	provider, err := goose.NewProvider(goose.DialectPostgres, sqlDB, migrations,
		goose.WithTableName(table),
		goose.WithSessionLocker(locker),
		// Only the migrations in fsys: the global registry is process-wide state that another
		// service's Go migrations could leak into.
		goose.WithDisableGlobalRegistry(true),
	)
	if err != nil {
		return fmt.Errorf("pgtenant: migrate: %w", err)
	}
	results, err := provider.Up(ctx)
	for _, r := range results {
		if r.Error == nil {
			logger.InfoContext(ctx, "pgtenant: migration applied", "file", r.Source.Path,
				"version", r.Source.Version, "took", r.Duration)
		}
	}
	if err != nil {
		return fmt.Errorf("pgtenant: migrate: %w", err)
	}
	if opts.AppRole == "" {
		return nil
	}
	return grantApp(ctx, ownerURL, opts.AppRole, table)
}

// grantSQL grants the app role what Migrate documents. It reads its inputs from transaction
// settings because a DO block takes no parameters; names are quoted with format('%I').
const grantSQL = `DO $grant$
DECLARE
	app   text := current_setting('pgtenant.app_role');
	vt    regclass := to_regclass(current_setting('pgtenant.version_table'));
	me    oid := (SELECT oid FROM pg_roles WHERE rolname = current_user);
	r     record;
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = app) THEN
		RAISE EXCEPTION 'pgtenant: app role "%" does not exist', app USING ERRCODE = 'undefined_object';
	END IF;
	IF (SELECT datdba FROM pg_database WHERE datname = current_database()) = me THEN
		EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), app);
	END IF;
	-- Only the schema's owner can revoke; elsewhere this is a no-op with a warning.
	REVOKE CREATE ON SCHEMA public FROM PUBLIC;
	FOR r IN SELECT nspname FROM pg_namespace WHERE nspname = 'public' OR nspowner = me LOOP
		EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', r.nspname, app);
	END LOOP;
	FOR r IN
		SELECT c.oid, c.relkind FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relowner = me
		  AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
		  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
		  AND n.nspname NOT LIKE 'pg\_%'
	LOOP
		-- The version table and its id sequence stay the owner's alone.
		IF vt IS NOT NULL AND (r.oid = vt OR EXISTS (
			SELECT 1 FROM pg_depend d WHERE d.objid = r.oid AND d.refobjid = vt)) THEN
			EXECUTE format('REVOKE ALL ON %s FROM %I', r.oid::regclass, app);
			CONTINUE;
		END IF;
		CASE r.relkind
		WHEN 'S' THEN EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE %s TO %I', r.oid::regclass, app);
		WHEN 'm' THEN EXECUTE format('GRANT SELECT ON %s TO %I', r.oid::regclass, app);
		ELSE EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO %I', r.oid::regclass, app);
		END CASE;
	END LOOP;
END
$grant$`

func grantApp(ctx context.Context, ownerURL, app, versionTable string) error {
	conn, err := pgx.Connect(ctx, ownerURL)
	if err != nil {
		return fmt.Errorf("pgtenant: grant %s: %w", app, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT set_config('pgtenant.app_role', $1, true), set_config('pgtenant.version_table', $2, true)", app, versionTable); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, grantSQL)
		return err
	})
	if err != nil {
		return fmt.Errorf("pgtenant: grant %s: %w", app, err)
	}
	return nil
}
