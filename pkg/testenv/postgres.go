package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkhead/bulkhead/pkg/pglocal"
	"github.com/bulkhead/bulkhead/pkg/pgtenant"
)

// EnvDatabaseURL names the environment variable holding a superuser URL
// (postgres://user:pass@host:port/db) of an existing PostgreSQL server to test against. When it
// is unset, the first test that needs Postgres starts a throwaway server with pglocal.
const EnvDatabaseURL = "BULKHEAD_TEST_DATABASE_URL"

// testPassword is set on the test roles so an external server that requires passwords works;
// the throwaway server trusts loopback connections anyway.
const testPassword = "bulkhead-test"

// pgStartTimeout bounds starting the shared server and building a template database.
const pgStartTimeout = 2 * time.Minute

// DBSpec describes a service's database.
type DBSpec struct {
	// Name is the service name ("identity"): roles are <Name>_owner and <Name>_app and the goose
	// version table is <Name>_schema_version. Within one test binary a Name stands for one
	// migration set: the template is built from the first spec seen with that Name.
	Name string
	// Migrations holds the service's goose SQL migrations at its root (see pgtenant.Migrate).
	Migrations fs.FS
}

// Database is a fresh database for one test, cloned from its service's migrated template and
// dropped when the test ends.
type Database struct {
	// Name is the database's name.
	Name string
	// Roles are the service's owner and app roles (shared by every database of the service).
	Roles pgtenant.Roles
	// SuperURL, OwnerURL and AppURL connect to this database as a superuser, as the owner role
	// (migrations, fixtures that must bypass nothing but own the tables) and as the app role
	// (what the service uses; subject to row-level security).
	SuperURL, OwnerURL, AppURL string
}

// NewDatabase returns a fresh, migrated database for spec, dropped (with its connections) when
// tb ends. The first call for a spec.Name in this test binary creates the roles and a template
// database migrated once; every call then clones the template, which takes milliseconds.
// Tests calling it may run in parallel.
func NewDatabase(tb testing.TB, spec DBSpec) *Database {
	tb.Helper()
	if !specName.MatchString(spec.Name) {
		tb.Fatalf("testenv: DBSpec.Name %q must match %s", spec.Name, specName)
	}
	if spec.Migrations == nil {
		tb.Fatalf("testenv: DBSpec.Migrations is nil")
	}
	env, err := sharedPostgres()
	if err != nil {
		tb.Fatalf("testenv: postgres: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), pgStartTimeout)
	defer cancel()
	tmpl, err := env.template(ctx, spec)
	if err != nil {
		tb.Fatalf("testenv: template database for %q: %v", spec.Name, err)
	}
	name := fmt.Sprintf("%s_%s_%d", spec.Name, env.runID, env.seq.Add(1))
	if err := env.clone(ctx, tmpl, name); err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	tb.Cleanup(func() {
		// WITH (FORCE) ends sessions a test left open; pools this package handed out are
		// already closed, since their cleanups were registered later and run first.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := env.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			tb.Errorf("testenv: drop database %s: %v", name, err)
		}
	})
	return &Database{
		Name:     name,
		Roles:    tmpl.roles,
		SuperURL: env.urlFor("", "", name),
		OwnerURL: env.urlFor(tmpl.roles.Owner, testPassword, name),
		AppURL:   env.urlFor(tmpl.roles.App, testPassword, name),
	}
}

// AppDB returns a pgtenant.DB connected as the app role, closed when tb ends.
func (d *Database) AppDB(tb testing.TB) *pgtenant.DB {
	tb.Helper()
	return pgtenant.New(d.AppPool(tb))
}

// AppPool returns a raw pool connected as the app role, closed when tb ends: for tests that
// try to get around pgtenant (no tenant set, session-level settings) and must still be stopped
// by row-level security.
func (d *Database) AppPool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	return newPool(tb, d.AppURL)
}

// OwnerPool returns a pool connected as the owner role, closed when tb ends. The owner is
// subject to the forced policies too.
func (d *Database) OwnerPool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	return newPool(tb, d.OwnerURL)
}

// SuperPool returns a pool connected as a superuser, closed when tb ends: superusers bypass
// row-level security, so use it only to seed or inspect across tenants.
func (d *Database) SuperPool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	return newPool(tb, d.SuperURL)
}

// PoolConfig returns a pool config for url, for tests that need pool settings (MaxConns…);
// pass the result to NewPool.
func PoolConfig(tb testing.TB, url string) *pgxpool.Config {
	tb.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	return cfg
}

// NewPool opens a pool from cfg, closed when tb ends.
func NewPool(tb testing.TB, cfg *pgxpool.Config) *pgxpool.Pool {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		tb.Fatalf("testenv: open pool: %v", err)
	}
	tb.Cleanup(pool.Close)
	if err := pool.Ping(ctx); err != nil {
		tb.Fatalf("testenv: ping %s@%s: %v", cfg.ConnConfig.User, cfg.ConnConfig.Database, err)
	}
	return pool
}

func newPool(tb testing.TB, url string) *pgxpool.Pool {
	tb.Helper()
	return NewPool(tb, PoolConfig(tb, url))
}

// PostgresURL returns a superuser URL of the shared server's maintenance database, starting
// the server on first use.
func PostgresURL(tb testing.TB) string {
	tb.Helper()
	env, err := sharedPostgres()
	if err != nil {
		tb.Fatalf("testenv: postgres: %v", err)
	}
	return env.superURL
}

// StopPostgres drops the template databases this binary created and stops the shared server if
// this binary started it. RunMain calls it after the tests; call it yourself from a custom
// TestMain. Later calls to NewDatabase fail.
func StopPostgres() error {
	pgShared.mu.Lock()
	defer pgShared.mu.Unlock()
	if pgShared.env == nil {
		// Never started (or already stopped): make sure a later first use fails instead of
		// starting a server nobody will stop.
		pgShared.err = errPostgresStopped
		pgShared.done = true
		return nil
	}
	err := pgShared.env.close()
	pgShared.env = nil
	pgShared.err = errPostgresStopped
	return err
}

var errPostgresStopped = errors.New("shared postgres already stopped by StopPostgres")

// specName keeps generated role and database names inside PostgreSQL's 63-byte identifiers.
var specName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,23}$`)

// pgShared is the one PostgreSQL server of this test binary. It is process-wide on purpose, as
// test infrastructure: a server per test would cost a second each, while a database per test
// (cloned from a template) costs milliseconds and isolates tests just as well.
var pgShared struct {
	mu   sync.Mutex
	done bool
	env  *pgEnv
	err  error
}

func sharedPostgres() (*pgEnv, error) {
	pgShared.mu.Lock()
	defer pgShared.mu.Unlock()
	if !pgShared.done {
		pgShared.done = true
		ctx, cancel := context.WithTimeout(context.Background(), pgStartTimeout)
		defer cancel()
		pgShared.env, pgShared.err = startPostgres(ctx)
	}
	return pgShared.env, pgShared.err
}

// pgEnv is a server with the templates and databases this binary made on it.
type pgEnv struct {
	srv      *pglocal.Server // nil when the server is external
	super    *url.URL        // superuser URL of the maintenance database
	superURL string
	admin    *pgxpool.Pool // superuser connections to the maintenance database
	// runID makes this binary's database names unique on a shared external server, where
	// several test binaries (go test ./...) run at once and crashed runs leave databases.
	runID string
	seq   atomic.Int64

	mu        sync.Mutex
	templates map[string]*pgTemplate
}

type pgTemplate struct {
	ready chan struct{} // closed once name/roles/err are set
	name  string
	roles pgtenant.Roles
	err   error
	// cloneMu serializes clones of this template. PostgreSQL refuses to clone a database that
	// has sessions; none can exist (the template refuses connections once built), so this is
	// belt and braces — and on a 2-core machine concurrent clones would not finish sooner.
	cloneMu sync.Mutex
}

func startPostgres(ctx context.Context) (*pgEnv, error) {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	env := &pgEnv{
		runID:     fmt.Sprintf("%d%s", os.Getpid()%100000, hex.EncodeToString(b)),
		templates: map[string]*pgTemplate{},
	}
	raw := os.Getenv(EnvDatabaseURL)
	if raw == "" {
		logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		srv, err := pglocal.Start(ctx, pglocal.Options{Logger: logger})
		if err != nil {
			return nil, fmt.Errorf("%w (or set %s to an existing server's superuser URL)", err, EnvDatabaseURL)
		}
		env.srv = srv
		raw = srv.URL("postgres")
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		env.close()
		return nil, fmt.Errorf("%s must be a postgres:// URL", EnvDatabaseURL)
	}
	env.super, env.superURL = u, raw
	cfg, err := pgxpool.ParseConfig(raw)
	if err != nil {
		env.close()
		return nil, err
	}
	cfg.MaxConns = 4
	if env.admin, err = pgxpool.NewWithConfig(ctx, cfg); err == nil {
		err = env.admin.Ping(ctx)
	}
	if err != nil {
		env.close()
		return nil, fmt.Errorf("connect as superuser: %w", err)
	}
	return env, nil
}

// urlFor returns the URL of database db as user (empty: the superuser).
func (e *pgEnv) urlFor(user, password, db string) string {
	u := *e.super
	if user != "" {
		u.User = url.UserPassword(user, password)
	}
	u.Path = "/" + db
	u.RawPath = ""
	return u.String()
}

// template returns spec's migrated template, building it on first use. Builds of different
// names run concurrently; callers for the same name wait for the one build.
func (e *pgEnv) template(ctx context.Context, spec DBSpec) (*pgTemplate, error) {
	e.mu.Lock()
	t, ok := e.templates[spec.Name]
	if !ok {
		t = &pgTemplate{ready: make(chan struct{})}
		e.templates[spec.Name] = t
	}
	e.mu.Unlock()
	if ok {
		select {
		case <-t.ready:
			return t, t.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	defer close(t.ready)
	t.roles = pgtenant.Roles{Owner: spec.Name + "_owner", App: spec.Name + "_app", Password: testPassword}
	t.name = fmt.Sprintf("%s_%s_tmpl", spec.Name, e.runID)
	t.err = e.buildTemplate(ctx, t, spec)
	return t, t.err
}

func (e *pgEnv) buildTemplate(ctx context.Context, t *pgTemplate, spec DBSpec) error {
	if err := pgtenant.EnsureRoles(ctx, e.superURL, t.roles); err != nil {
		return err
	}
	if err := pgtenant.CreateDatabase(ctx, e.superURL, t.name, t.roles.Owner); err != nil {
		return err
	}
	err := pgtenant.Migrate(ctx, e.urlFor(t.roles.Owner, testPassword, t.name), spec.Migrations, pgtenant.MigrateOptions{
		AppRole:      t.roles.App,
		VersionTable: spec.Name + "_schema_version",
	})
	if err != nil {
		return err
	}
	// No session may stay on the template (clones would fail); refusing connections from now
	// on also stops a test from changing it by mistake.
	_, err = e.admin.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{t.name}.Sanitize()+" WITH ALLOW_CONNECTIONS false")
	return err
}

func (e *pgEnv) clone(ctx context.Context, t *pgTemplate, name string) error {
	t.cloneMu.Lock()
	defer t.cloneMu.Unlock()
	// The default strategy (WAL_LOG on PostgreSQL 15+) is right here: FILE_COPY forces two
	// checkpoints per clone, which measured here at up to seconds on a busy machine. OWNER
	// makes the owner role own the clone and, through pg_database_owner, its public schema, as
	// in production.
	_, err := e.admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+
		" TEMPLATE "+pgx.Identifier{t.name}.Sanitize()+
		" OWNER "+pgx.Identifier{t.roles.Owner}.Sanitize())
	if err != nil {
		return fmt.Errorf("clone %s into %s: %w", t.name, name, err)
	}
	return nil
}

// close drops the templates (an external server keeps everything else) and stops the server
// this binary started.
func (e *pgEnv) close() error {
	var errs []error
	if e.admin != nil {
		if e.srv == nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			e.mu.Lock()
			for _, t := range e.templates {
				<-t.ready
				if t.name != "" {
					if _, err := e.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{t.name}.Sanitize()+" WITH (FORCE)"); err != nil {
						errs = append(errs, err)
					}
				}
			}
			e.mu.Unlock()
			cancel()
		}
		e.admin.Close()
	}
	if e.srv != nil {
		errs = append(errs, e.srv.Stop())
	}
	return errors.Join(errs...)
}
