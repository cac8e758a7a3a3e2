package pgtenant_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/pkg/testenv"
)

// TestInvalidScopeNeverRuns: a scope without a valid tenant is refused before any database
// work. The DB here points at nothing and its pool is closed, so any attempt to run would
// fail with a different error.
func TestInvalidScopeNeverRuns(t *testing.T) {
	t.Parallel()
	pool, err := pgxpool.New(context.Background(), "postgres://nobody@127.0.0.1:1/none?connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	pool.Close()
	db := pgtenant.New(pool)
	ctx := context.Background()
	valid := uuid.NewString()

	tests := []struct {
		name  string
		scope pgtenant.Scope
		want  error
	}{
		{"empty", pgtenant.Scope{}, pgtenant.ErrNoTenant},
		{"not a uuid", pgtenant.Scope{TenantID: "acme"}, pgtenant.ErrNoTenant},
		{"sql in tenant", pgtenant.Scope{TenantID: "'), set_config('app.platform','on',true), ('"}, pgtenant.ErrNoTenant},
		{"nil uuid", pgtenant.Scope{TenantID: uuid.Nil.String()}, pgtenant.ErrNoTenant},
		{"user without tenant", pgtenant.Scope{UserID: valid}, pgtenant.ErrNoTenant},
		{"bad user", pgtenant.Scope{TenantID: valid, UserID: "bob"}, pgtenant.ErrInvalidUser},
		{"nil user", pgtenant.Scope{TenantID: valid, UserID: uuid.Nil.String()}, pgtenant.ErrInvalidUser},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ran := false
			errs := map[string]error{
				"Validate": tt.scope.Validate(),
				"InTx": db.InTx(ctx, tt.scope, func(pgx.Tx) error {
					ran = true
					return nil
				}),
			}
			_, errs["Query"] = pgtenant.Query(ctx, db, tt.scope, "SELECT 1", nil, pgx.RowTo[int])
			_, errs["QueryOne"] = pgtenant.QueryOne(ctx, db, tt.scope, "SELECT 1", nil, pgx.RowTo[int])
			_, errs["Exec"] = pgtenant.Exec(ctx, db, tt.scope, "SELECT 1")
			for path, err := range errs {
				if !errors.Is(err, tt.want) {
					t.Errorf("%s: %v, want %v", path, err, tt.want)
				}
			}
			if ran {
				t.Error("InTx ran fn for an invalid scope")
			}
		})
	}
}

// TestScopeCanonicalForm: any form google/uuid parses is accepted and the canonical form is
// what PostgreSQL sees.
func TestScopeCanonicalForm(t *testing.T) {
	t.Parallel()
	db := testenv.NewDatabase(t, spec)
	app := db.AppDB(t)
	ctx := context.Background()
	id := uuid.New()
	user := uuid.New()
	forms := []string{
		strings.ToUpper(id.String()),
		"{" + id.String() + "}",
		"urn:uuid:" + id.String(),
		strings.ReplaceAll(id.String(), "-", ""),
	}
	for _, form := range forms {
		scope := pgtenant.Scope{TenantID: form, UserID: strings.ToUpper(user.String())}
		type settings struct{ Tenant, User string }
		got, err := pgtenant.QueryOne(ctx, app, scope,
			"SELECT current_setting('app.tenant_id') AS tenant, current_setting('app.user_id') AS user", nil,
			pgx.RowToStructByName[settings])
		if err != nil {
			t.Fatalf("%s: %v", form, err)
		}
		if got.Tenant != id.String() || got.User != user.String() {
			t.Errorf("%s: server saw tenant %q user %q, want %q %q", form, got.Tenant, got.User, id, user)
		}
		var inTx string
		if err := app.InTx(ctx, scope, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, "SELECT current_setting('app.tenant_id')").Scan(&inTx)
		}); err != nil {
			t.Fatal(err)
		}
		if inTx != id.String() {
			t.Errorf("%s: InTx server saw tenant %q, want %q", form, inTx, id)
		}
	}
}

// TestInTxOutcome: commit on nil, rollback on error (returned unchanged) and on panic
// (re-raised).
func TestInTxOutcome(t *testing.T) {
	t.Parallel()
	db := testenv.NewDatabase(t, spec)
	app := db.AppDB(t)
	ctx := context.Background()
	tenant := testenv.NewTenant()
	boom := errors.New("boom")

	tests := []struct {
		name      string
		after     func(tx pgx.Tx) error
		wantErr   error
		wantPanic bool
		wantRow   bool
	}{
		{name: "commit", after: func(pgx.Tx) error { return nil }, wantRow: true},
		{name: "error rolls back", after: func(pgx.Tx) error { return boom }, wantErr: boom},
		{name: "wrapped error rolls back", after: func(pgx.Tx) error { return fmt.Errorf("ctx: %w", boom) }, wantErr: boom},
		{name: "panic rolls back", after: func(pgx.Tx) error { panic(boom) }, wantPanic: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := uuid.NewString()
			var err error
			panicked := func() (p bool) {
				defer func() { p = recover() != nil }()
				err = app.InTx(ctx, tenant, func(tx pgx.Tx) error {
					if _, err := tx.Exec(ctx, "INSERT INTO notes (tenant_id, id, body) VALUES ($1, $2, 'x')", tenant.TenantID, id); err != nil {
						return err
					}
					return tt.after(tx)
				})
				return false
			}()
			if panicked != tt.wantPanic {
				t.Fatalf("panicked = %v, want %v", panicked, tt.wantPanic)
			}
			if !tt.wantPanic && !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			_, err = pgtenant.QueryOne(ctx, app, tenant, "SELECT id FROM notes WHERE id = $1", []any{id}, pgx.RowTo[uuid.UUID])
			if gotRow := err == nil; gotRow != tt.wantRow {
				t.Errorf("row present = %v (err %v), want %v", gotRow, err, tt.wantRow)
			}
		})
	}
}

// TestQueryHelpers covers Query, QueryOne and Exec results and errors.
func TestQueryHelpers(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	type note struct {
		TenantID uuid.UUID `db:"tenant_id"`
		ID       uuid.UUID `db:"id"`
		Body     string    `db:"body"`
	}

	notes, err := pgtenant.Query(ctx, f.app, f.a, "SELECT tenant_id, id, body FROM notes ORDER BY id", nil, pgx.RowToStructByName[note])
	if err != nil {
		t.Fatal(err)
	}
	if len(notes) != 2 {
		t.Fatalf("Query: %d notes, want 2", len(notes))
	}
	for _, n := range notes {
		if n.TenantID.String() != f.a.TenantID {
			t.Errorf("Query returned tenant %s's note", n.TenantID)
		}
	}

	empty, err := pgtenant.Query(ctx, f.app, f.a, "SELECT id FROM notes WHERE id = $1", []any{f.bNote}, pgx.RowTo[uuid.UUID])
	if err != nil || len(empty) != 0 {
		t.Errorf("Query for B's note: %v, %v; want no rows, no error", empty, err)
	}

	tests := []struct {
		name    string
		sql     string
		args    []any
		wantErr error
	}{
		{"own note", "SELECT body FROM notes WHERE id = $1", []any{f.aNote}, nil},
		{"other tenant's note is not found", "SELECT body FROM notes WHERE id = $1", []any{f.bNote}, pgtenant.ErrNotFound},
		{"missing note is not found", "SELECT body FROM notes WHERE id = $1", []any{uuid.NewString()}, pgtenant.ErrNotFound},
		{"two rows", "SELECT body FROM notes", nil, pgx.ErrTooManyRows},
	}
	for _, tt := range tests {
		t.Run("QueryOne "+tt.name, func(t *testing.T) {
			body, err := pgtenant.QueryOne(ctx, f.app, f.a, tt.sql, tt.args, pgx.RowTo[string])
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr == nil && body != "note" {
				t.Errorf("body = %q", body)
			}
		})
	}
	// Not found must also read as pgx.ErrNoRows for code (and apierr) that checks that.
	if _, err := pgtenant.QueryOne(ctx, f.app, f.a, "SELECT 1 WHERE false", nil, pgx.RowTo[int]); !errors.Is(err, pgx.ErrNoRows) {
		t.Errorf("not found = %v, want it to wrap pgx.ErrNoRows", err)
	}

	tag, err := pgtenant.Exec(ctx, f.app, f.a, "INSERT INTO notes (tenant_id, body) VALUES ($1, 'third')", f.a.TenantID)
	if err != nil || tag.RowsAffected() != 1 || !tag.Insert() {
		t.Errorf("Exec insert: %v, %v", tag, err)
	}
	if _, err := pgtenant.Exec(ctx, f.app, f.a, "INSERT INTO notes (tenant_id, body) VALUES ($1, NULL)", f.a.TenantID); pgCode(err) != "23502" {
		t.Errorf("Exec not-null violation: %v, want SQLSTATE 23502", err)
	}
	if got := f.countAs(t, "notes", f.a.TenantID); got != 3 {
		t.Errorf("A has %d notes, want 3", got)
	}
}

// TestMigrate: re-running is a no-op, the grants cover what the app role needs and not the
// version table, and VerifyIsolation accepts the result but catches a table that breaks the
// rules.
func TestMigrate(t *testing.T) {
	t.Parallel()
	db := testenv.NewDatabase(t, spec)
	ctx := context.Background()
	opts := pgtenant.MigrateOptions{AppRole: db.Roles.App, VersionTable: "pgtenant_schema_version"}
	if err := pgtenant.Migrate(ctx, db.OwnerURL, spec.Migrations, opts); err != nil {
		t.Fatalf("re-run Migrate: %v", err)
	}
	var version int
	if err := db.OwnerPool(t).QueryRow(ctx, "SELECT max(version_id) FROM pgtenant_schema_version").Scan(&version); err != nil {
		t.Fatal(err)
	}
	if version != 2 {
		t.Errorf("schema version %d, want 2", version)
	}

	app := db.AppPool(t)
	privs := []struct {
		object, priv string
		want         bool
	}{
		{"notes", "SELECT", true},
		{"notes", "INSERT", true},
		{"notes", "UPDATE", true},
		{"notes", "DELETE", true},
		{"notes", "TRUNCATE", false},
		{"notes", "REFERENCES", false},
		{"notes", "TRIGGER", false},
		{"jobs", "INSERT", true},
		{"pgtenant_schema_version", "SELECT", false},
		{"pgtenant_schema_version", "INSERT", false},
	}
	for _, p := range privs {
		var got bool
		if err := app.QueryRow(ctx, "SELECT has_table_privilege($1, $2)", p.object, p.priv).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != p.want {
			t.Errorf("app %s on %s = %v, want %v", p.priv, p.object, got, p.want)
		}
	}
	var createInPublic, seqUsage bool
	if err := app.QueryRow(ctx, "SELECT has_schema_privilege('public', 'CREATE'), has_sequence_privilege('jobs_id_seq', 'USAGE')").
		Scan(&createInPublic, &seqUsage); err != nil {
		t.Fatal(err)
	}
	if createInPublic || !seqUsage {
		t.Errorf("app: CREATE on public = %v (want false), USAGE on jobs_id_seq = %v (want true)", createInPublic, seqUsage)
	}

	if err := pgtenant.VerifyIsolation(ctx, db.SuperURL, db.Roles.App); err != nil {
		t.Fatalf("VerifyIsolation on the migrated schema: %v", err)
	}
	// Now break the rules as the owner, as a careless migration would.
	owner := db.OwnerPool(t)
	for _, stmt := range []string{
		"CREATE TABLE leaky (tenant_id uuid NOT NULL, secret text)",
		"ALTER TABLE notes NO FORCE ROW LEVEL SECURITY",
	} {
		if _, err := owner.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	err := pgtenant.VerifyIsolation(ctx, db.SuperURL, db.Roles.App)
	if !errors.Is(err, pgtenant.ErrIsolation) {
		t.Fatalf("VerifyIsolation after breaking the rules: %v, want ErrIsolation", err)
	}
	for _, want := range []string{"leaky", "notes"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("VerifyIsolation does not name %s: %v", want, err)
		}
	}
}

func TestMigrateUnknownAppRole(t *testing.T) {
	t.Parallel()
	db := testenv.NewDatabase(t, spec)
	err := pgtenant.Migrate(context.Background(), db.OwnerURL, spec.Migrations,
		pgtenant.MigrateOptions{AppRole: "no_such_role_" + strings.ReplaceAll(uuid.NewString()[:8], "-", ""), VersionTable: "pgtenant_schema_version"})
	if pgCode(err) != "42704" {
		t.Errorf("Migrate with a missing app role: %v, want SQLSTATE 42704", err)
	}
}

// TestEnsureRoles: idempotent under concurrency, asserts the attributes of an existing role,
// and strips the app role of any membership.
func TestEnsureRoles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	superURL := testenv.PostgresURL(t)
	suffix := strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	roles := pgtenant.Roles{Owner: "er_owner_" + suffix, App: "er_app_" + suffix, Password: "it's secret"}
	super, err := pgx.Connect(ctx, superURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, r := range []string{roles.App, roles.Owner} {
			if _, err := super.Exec(ctx, "DROP ROLE IF EXISTS "+r); err != nil {
				t.Errorf("drop role %s: %v", r, err)
			}
		}
		super.Close(ctx)
	})

	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = pgtenant.EnsureRoles(ctx, superURL, roles) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent EnsureRoles #%d: %v", i, err)
		}
	}

	// Someone hands the app role power; EnsureRoles takes it back.
	for _, stmt := range []string{
		"ALTER ROLE " + roles.App + " BYPASSRLS INHERIT",
		"GRANT " + roles.Owner + " TO " + roles.App,
		"GRANT pg_read_all_data TO " + roles.App,
	} {
		if _, err := super.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	if err := pgtenant.EnsureRoles(ctx, superURL, roles); err != nil {
		t.Fatal(err)
	}
	rows, err := super.Query(ctx, `SELECT rolname, rolcanlogin, rolsuper, rolbypassrls, rolinherit, rolcreatedb, rolcreaterole,
			(SELECT count(*) FROM pg_auth_members m WHERE m.member = r.oid)
		FROM pg_roles r WHERE rolname IN ($1, $2)`, roles.Owner, roles.App)
	if err != nil {
		t.Fatal(err)
	}
	type role struct {
		Name                                                string
		Login, Super, Bypass, Inherit, CreateDB, CreateRole bool
		Memberships                                         int
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[role])
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("found %d roles, want 2", len(got))
	}
	for _, r := range got {
		wantInherit := r.Name == roles.Owner
		if !r.Login || r.Super || r.Bypass || r.CreateDB || r.CreateRole || r.Inherit != wantInherit {
			t.Errorf("role %+v: want LOGIN, no SUPERUSER/BYPASSRLS/CREATEDB/CREATEROLE, INHERIT=%v", r, wantInherit)
		}
		if r.Name == roles.App && r.Memberships != 0 {
			t.Errorf("app role is still a member of %d role(s)", r.Memberships)
		}
	}

	// A password with a quote in it was accepted (quoted, not spliced).
	var match bool
	if err := super.QueryRow(ctx, "SELECT rolpassword IS NOT NULL FROM pg_authid WHERE rolname = $1", roles.App).Scan(&match); err != nil {
		t.Fatal(err)
	}
	if !match {
		t.Error("app role has no password")
	}

	// CreateDatabase is idempotent too.
	dbName := "er_db_" + suffix
	for range 2 {
		if err := pgtenant.CreateDatabase(ctx, superURL, dbName, roles.Owner); err != nil {
			t.Fatalf("CreateDatabase: %v", err)
		}
	}
	var dbOwner string
	if err := super.QueryRow(ctx, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", dbName).Scan(&dbOwner); err != nil {
		t.Fatal(err)
	}
	if dbOwner != roles.Owner {
		t.Errorf("database owner %q, want %q", dbOwner, roles.Owner)
	}
	if _, err := super.Exec(ctx, "DROP DATABASE "+dbName); err != nil {
		t.Fatal(err)
	}
}

func TestRoleNamesValidated(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// No server is contacted: names are checked first.
	const url = "postgres://nobody@127.0.0.1:1/none"
	tests := []struct {
		name string
		call func() error
	}{
		{"owner with quote", func() error { return pgtenant.EnsureRoles(ctx, url, pgtenant.Roles{Owner: `x"; DROP`, App: "a"}) }},
		{"app uppercase", func() error { return pgtenant.EnsureRoles(ctx, url, pgtenant.Roles{Owner: "o", App: "App"}) }},
		{"same role twice", func() error { return pgtenant.EnsureRoles(ctx, url, pgtenant.Roles{Owner: "o", App: "o"}) }},
		{"empty owner", func() error { return pgtenant.EnsureRoles(ctx, url, pgtenant.Roles{App: "a"}) }},
		{"database name too long", func() error { return pgtenant.CreateDatabase(ctx, url, strings.Repeat("d", 64), "o") }},
		{"database owner with space", func() error { return pgtenant.CreateDatabase(ctx, url, "d", "o o") }},
		{"app role for grants", func() error {
			return pgtenant.Migrate(ctx, url, spec.Migrations, pgtenant.MigrateOptions{AppRole: "a-b"})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, pgtenant.ErrInvalidName) {
				t.Errorf("err = %v, want ErrInvalidName", err)
			}
		})
	}
}
