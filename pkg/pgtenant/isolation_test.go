package pgtenant_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/pkg/testenv"
)

// SQLSTATEs the tests expect.
const (
	insufficientPrivilege = "42501" // includes "new row violates row-level security policy"
)

func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// fixture is a fresh database with two tenants holding two notes each, written through the
// app role (so own-tenant writes are proven to work).
type fixture struct {
	db    *testenv.Database
	app   *pgtenant.DB
	super *pgxpool.Pool
	a, b  pgtenant.Scope
	aNote string // one of a's notes
	bNote string // one of b's notes
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	db := testenv.NewDatabase(t, spec)
	f := &fixture{db: db, app: db.AppDB(t), super: db.SuperPool(t)}
	f.a, f.b = testenv.TwoTenants()
	for _, s := range []struct {
		scope pgtenant.Scope
		first *string
	}{{f.a, &f.aNote}, {f.b, &f.bNote}} {
		err := f.app.InTx(context.Background(), s.scope, func(tx pgx.Tx) error {
			for i := range 2 {
				var id string
				if err := tx.QueryRow(context.Background(),
					"INSERT INTO notes (tenant_id, body) VALUES ($1, $2) RETURNING id",
					s.scope.TenantID, "note").Scan(&id); err != nil {
					return err
				}
				if i == 0 {
					*s.first = id
				}
			}
			_, err := tx.Exec(context.Background(), "INSERT INTO tenants (tenant_id, name) VALUES ($1, 'x')", s.scope.TenantID)
			return err
		})
		if err != nil {
			t.Fatalf("seed tenant %s: %v", s.scope.TenantID, err)
		}
	}
	return f
}

// countAs counts rows of table per tenant as the superuser (who bypasses RLS), to check what
// an attack really did.
func (f *fixture) countAs(t *testing.T, table, tenant string) int {
	t.Helper()
	var n int
	if err := f.super.QueryRow(context.Background(),
		"SELECT count(*) FROM "+pgx.Identifier{table}.Sanitize()+" WHERE tenant_id = $1", tenant).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestTenantIsolation is the row-level security proof: as tenant A, every way to read, change
// or plant B's rows — and every way to switch the enforcement off — fails or sees nothing.
func TestTenantIsolation(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()

	// Placeholders: $1 = B's tenant id, $2 = B's note id, $3 = A's note id (only those used).
	attacks := []struct {
		name     string
		stmts    []string
		args     func() []any // arguments of the last statement
		wantCode string       // SQLSTATE of the last statement; "" = must succeed
		wantRows int64        // rows returned/affected when it succeeds
	}{
		{name: "select all sees own rows only", stmts: []string{"SELECT * FROM notes"}, wantRows: 2},
		{name: "select by B's tenant id", stmts: []string{"SELECT * FROM notes WHERE tenant_id = $1"},
			args: func() []any { return []any{f.b.TenantID} }},
		{name: "select B's note by id", stmts: []string{"SELECT * FROM notes WHERE id = $1"},
			args: func() []any { return []any{f.bNote} }},
		{name: "select B's tenant record", stmts: []string{"SELECT * FROM tenants WHERE tenant_id = $1"},
			args: func() []any { return []any{f.b.TenantID} }},
		{name: "update B's note", stmts: []string{"UPDATE notes SET body = 'pwned' WHERE id = $1"},
			args: func() []any { return []any{f.bNote} }},
		{name: "update every note", stmts: []string{"UPDATE notes SET body = body"}, wantRows: 2},
		{name: "delete B's note", stmts: []string{"DELETE FROM notes WHERE id = $1"},
			args: func() []any { return []any{f.bNote} }},
		{name: "insert a note for B", stmts: []string{"INSERT INTO notes (tenant_id, body) VALUES ($1, 'planted')"},
			args: func() []any { return []any{f.b.TenantID} }, wantCode: insufficientPrivilege},
		{name: "upsert over B's note", stmts: []string{"INSERT INTO notes (tenant_id, id, body) VALUES ($1, $2, 'x') ON CONFLICT (tenant_id, id) DO UPDATE SET body = 'pwned'"},
			args: func() []any { return []any{f.b.TenantID, f.bNote} }, wantCode: insufficientPrivilege},
		{name: "move own note to B", stmts: []string{"UPDATE notes SET tenant_id = $1 WHERE id = $2"},
			args: func() []any { return []any{f.b.TenantID, f.aNote} }, wantCode: insufficientPrivilege},
		{name: "row_security off", stmts: []string{"SET LOCAL row_security = off", "SELECT * FROM notes"},
			wantCode: insufficientPrivilege},
		{name: "disable RLS", stmts: []string{"ALTER TABLE notes DISABLE ROW LEVEL SECURITY"}, wantCode: insufficientPrivilege},
		{name: "unforce RLS", stmts: []string{"ALTER TABLE notes NO FORCE ROW LEVEL SECURITY"}, wantCode: insufficientPrivilege},
		{name: "drop policy", stmts: []string{"DROP POLICY tenant_isolation ON notes"}, wantCode: insufficientPrivilege},
		{name: "create permissive policy", stmts: []string{"CREATE POLICY open ON notes USING (true)"}, wantCode: insufficientPrivilege},
		{name: "create table in public", stmts: []string{"CREATE TABLE mine (x int)"}, wantCode: insufficientPrivilege},
		{name: "create function in public", stmts: []string{"CREATE FUNCTION peek() RETURNS bigint LANGUAGE sql SECURITY DEFINER AS 'SELECT count(*) FROM notes'"},
			wantCode: insufficientPrivilege},
		{name: "become the owner", stmts: []string{"SET ROLE " + f.db.Roles.Owner}, wantCode: insufficientPrivilege},
		{name: "truncate", stmts: []string{"TRUNCATE notes"}, wantCode: insufficientPrivilege},
		{name: "rewrite migration history", stmts: []string{"DELETE FROM pgtenant_schema_version"}, wantCode: insufficientPrivilege},
	}
	for _, tt := range attacks {
		t.Run(tt.name, func(t *testing.T) {
			var args []any
			if tt.args != nil {
				args = tt.args()
			}
			var tag pgconn.CommandTag
			err := f.app.InTx(ctx, f.a, func(tx pgx.Tx) error {
				for _, s := range tt.stmts[:len(tt.stmts)-1] {
					if _, err := tx.Exec(ctx, s); err != nil {
						return err
					}
				}
				var err error
				tag, err = tx.Exec(ctx, tt.stmts[len(tt.stmts)-1], args...)
				return err
			})
			check := func(path string, tag pgconn.CommandTag, err error) {
				t.Helper()
				if got := pgCode(err); got != tt.wantCode || (tt.wantCode == "" && err != nil) {
					t.Fatalf("%s: error %v (SQLSTATE %q), want SQLSTATE %q", path, err, got, tt.wantCode)
				}
				if err == nil && tag.RowsAffected() != tt.wantRows {
					t.Errorf("%s: %d rows, want %d", path, tag.RowsAffected(), tt.wantRows)
				}
			}
			check("InTx", tag, err)
			// The one-round-trip path must hold the same line.
			if len(tt.stmts) == 1 {
				tag, err := pgtenant.Exec(ctx, f.app, f.a, tt.stmts[0], args...)
				check("Exec", tag, err)
			}
		})
	}

	// Whatever the attacks did, B's data is intact and the enforcement is still on.
	if got := f.countAs(t, "notes", f.b.TenantID); got != 2 {
		t.Errorf("B has %d notes after the attacks, want 2", got)
	}
	var pwned int
	if err := f.super.QueryRow(ctx, "SELECT count(*) FROM notes WHERE body <> 'note'").Scan(&pwned); err != nil {
		t.Fatal(err)
	}
	if pwned != 0 {
		t.Errorf("%d notes were changed by the attacks", pwned)
	}
	if err := pgtenant.VerifyIsolation(ctx, f.db.SuperURL, f.db.Roles.App); err != nil {
		t.Errorf("after the attacks: %v", err)
	}
}

// TestNoTenantSeesNothing: without a tenant — a raw app connection, InGlobalTx, InPlatformTx —
// tenant tables look empty and refuse writes.
func TestNoTenantSeesNothing(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	raw := f.db.AppPool(t)

	paths := []struct {
		name  string
		count func() (int, error)
		write func() error
	}{
		{
			name: "raw app connection",
			count: func() (n int, err error) {
				err = raw.QueryRow(ctx, "SELECT count(*) FROM notes").Scan(&n)
				return n, err
			},
			write: func() error {
				_, err := raw.Exec(ctx, "INSERT INTO notes (tenant_id, body) VALUES ($1, 'x')", f.a.TenantID)
				return err
			},
		},
		{
			name: "InGlobalTx",
			count: func() (n int, err error) {
				err = f.app.InGlobalTx(ctx, func(tx pgx.Tx) error {
					return tx.QueryRow(ctx, "SELECT count(*) FROM notes").Scan(&n)
				})
				return n, err
			},
			write: func() error {
				return f.app.InGlobalTx(ctx, func(tx pgx.Tx) error {
					_, err := tx.Exec(ctx, "INSERT INTO notes (tenant_id, body) VALUES ($1, 'x')", f.a.TenantID)
					return err
				})
			},
		},
		{
			name: "InPlatformTx",
			count: func() (n int, err error) {
				err = f.app.InPlatformTx(ctx, func(tx pgx.Tx) error {
					return tx.QueryRow(ctx, "SELECT count(*) FROM notes").Scan(&n)
				})
				return n, err
			},
			write: func() error {
				return f.app.InPlatformTx(ctx, func(tx pgx.Tx) error {
					_, err := tx.Exec(ctx, "INSERT INTO notes (tenant_id, body) VALUES ($1, 'x')", f.a.TenantID)
					return err
				})
			},
		},
	}
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			n, err := p.count()
			if err != nil {
				t.Fatal(err)
			}
			if n != 0 {
				t.Errorf("sees %d notes without a tenant, want 0", n)
			}
			if err := p.write(); pgCode(err) != insufficientPrivilege {
				t.Errorf("insert without a tenant: %v, want SQLSTATE %s", err, insufficientPrivilege)
			}
		})
	}
	if got := f.countAs(t, "notes", f.a.TenantID); got != 2 {
		t.Errorf("A has %d notes, want 2", got)
	}
}

// TestAppRoleHasNoPower proves from the catalogs that the app role cannot sidestep RLS: it is
// not the table owner and has neither SUPERUSER nor BYPASSRLS nor any role membership.
func TestAppRoleHasNoPower(t *testing.T) {
	t.Parallel()
	db := testenv.NewDatabase(t, spec)
	ctx := context.Background()
	super := db.SuperPool(t)

	var (
		super_, bypass, inherit bool
		memberships             int
		tableOwner              string
		rlsOn, rlsForced        bool
	)
	err := super.QueryRow(ctx, `SELECT r.rolsuper, r.rolbypassrls, r.rolinherit,
			(SELECT count(*) FROM pg_auth_members m WHERE m.member = r.oid),
			(SELECT pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.oid = 'public.notes'::regclass),
			(SELECT c.relrowsecurity FROM pg_class c WHERE c.oid = 'public.notes'::regclass),
			(SELECT c.relforcerowsecurity FROM pg_class c WHERE c.oid = 'public.notes'::regclass)
		FROM pg_roles r WHERE r.rolname = $1`, db.Roles.App).
		Scan(&super_, &bypass, &inherit, &memberships, &tableOwner, &rlsOn, &rlsForced)
	if err != nil {
		t.Fatal(err)
	}
	if super_ || bypass || inherit || memberships != 0 {
		t.Errorf("app role: superuser=%v bypassrls=%v inherit=%v memberships=%d, want all false/0",
			super_, bypass, inherit, memberships)
	}
	if tableOwner == db.Roles.App || tableOwner != db.Roles.Owner {
		t.Errorf("notes is owned by %q, want the owner role %q", tableOwner, db.Roles.Owner)
	}
	if !rlsOn || !rlsForced {
		t.Errorf("notes: rls enabled=%v forced=%v, want both", rlsOn, rlsForced)
	}

	// The same facts as the app role sees them about itself.
	var amSuper, amBypass bool
	if err := db.AppPool(t).QueryRow(ctx,
		"SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user").Scan(&amSuper, &amBypass); err != nil {
		t.Fatal(err)
	}
	if amSuper || amBypass {
		t.Errorf("app connection is superuser=%v bypassrls=%v", amSuper, amBypass)
	}
}

// TestNoLeakAcrossTransactions runs every pgtenant path on a pool of one connection and checks,
// on that same connection afterwards, that no setting and no row stayed visible.
func TestNoLeakAcrossTransactions(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	cfg := testenv.PoolConfig(t, f.db.AppURL)
	cfg.MaxConns = 1
	pool := testenv.NewPool(t, cfg)
	db := pgtenant.New(pool)
	user := testenv.NewUser(f.a)

	var firstPID uint32
	steps := []struct {
		name string
		run  func() (sawNotes int, err error) // must see the tenant's notes while scoped
	}{
		{"InTx commit", func() (n int, err error) {
			err = db.InTx(ctx, user, func(tx pgx.Tx) error {
				return tx.QueryRow(ctx, "SELECT count(*) FROM notes").Scan(&n)
			})
			return n, err
		}},
		{"InTx error", func() (n int, err error) {
			boom := errors.New("boom")
			err = db.InTx(ctx, f.a, func(tx pgx.Tx) error {
				if err := tx.QueryRow(ctx, "SELECT count(*) FROM notes").Scan(&n); err != nil {
					return err
				}
				return boom
			})
			if !errors.Is(err, boom) {
				return n, err
			}
			return n, nil
		}},
		{"InTx panic", func() (n int, err error) {
			defer func() {
				if recover() == nil {
					err = errors.New("panic was swallowed")
				}
			}()
			err = db.InTx(ctx, f.a, func(tx pgx.Tx) error {
				if err := tx.QueryRow(ctx, "SELECT count(*) FROM notes").Scan(&n); err != nil {
					return err
				}
				panic("boom")
			})
			return n, err
		}},
		{"InTx SQL error", func() (n int, err error) {
			err = db.InTx(ctx, f.a, func(tx pgx.Tx) error {
				if err := tx.QueryRow(ctx, "SELECT count(*) FROM notes").Scan(&n); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, "SELECT 1/0")
				return err
			})
			if pgCode(err) != "22012" {
				return n, err
			}
			return n, nil
		}},
		{"Query", func() (int, error) {
			ids, err := pgtenant.Query(ctx, db, user, "SELECT id::text FROM notes", nil, pgx.RowTo[string])
			return len(ids), err
		}},
		{"Query SQL error", func() (int, error) {
			_, err := pgtenant.Query(ctx, db, f.a, "SELECT 1/0 FROM notes", nil, pgx.RowTo[int])
			if pgCode(err) != "22012" {
				return 0, err
			}
			return 2, nil
		}},
		{"Exec", func() (int, error) {
			tag, err := pgtenant.Exec(ctx, db, f.a, "UPDATE notes SET body = body")
			return int(tag.RowsAffected()), err
		}},
		{"InPlatformTx", func() (n int, err error) {
			err = db.InPlatformTx(ctx, func(tx pgx.Tx) error {
				return tx.QueryRow(ctx, "SELECT count(*) FROM tenants").Scan(&n)
			})
			return n, err
		}},
	}
	for _, st := range steps {
		n, err := st.run()
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if n != 2 {
			t.Fatalf("%s: saw %d rows while scoped, want 2 (the step must really be scoped)", st.name, n)
		}
		var (
			pid                    uint32
			tenant, userID, plat   string
			notes, tenants, drafts int
		)
		err = pool.QueryRow(ctx, `SELECT pg_backend_pid(),
				coalesce(current_setting('app.tenant_id', true), ''),
				coalesce(current_setting('app.user_id', true), ''),
				coalesce(current_setting('app.platform', true), ''),
				(SELECT count(*) FROM notes), (SELECT count(*) FROM tenants), (SELECT count(*) FROM drafts)`).
			Scan(&pid, &tenant, &userID, &plat, &notes, &tenants, &drafts)
		if err != nil {
			t.Fatalf("after %s: %v", st.name, err)
		}
		if firstPID == 0 {
			firstPID = pid
		}
		if pid != firstPID {
			t.Fatalf("after %s: backend %d, want the single pooled connection %d", st.name, pid, firstPID)
		}
		if tenant != "" || userID != "" || plat != "" || notes != 0 || tenants != 0 || drafts != 0 {
			t.Errorf("after %s: leaked tenant=%q user=%q platform=%q notes=%d tenants=%d drafts=%d",
				st.name, tenant, userID, plat, notes, tenants, drafts)
		}
	}
}

// TestSessionSettingCannotWiden: a session-level setting left on a pooled connection (by code
// outside pgtenant) does not widen a pgtenant transaction, which sets all three values itself.
func TestSessionSettingCannotWiden(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	cfg := testenv.PoolConfig(t, f.db.AppURL)
	cfg.MaxConns = 1
	pool := testenv.NewPool(t, cfg)
	db := pgtenant.New(pool)

	if _, err := pool.Exec(ctx, "SELECT set_config('app.tenant_id', $1, false), set_config('app.platform', 'on', false)", f.b.TenantID); err != nil {
		t.Fatal(err)
	}
	var bVisible, tenantsVisible int
	err := db.InTx(ctx, f.a, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, "SELECT (SELECT count(*) FROM notes WHERE tenant_id = $1), (SELECT count(*) FROM tenants)",
			f.b.TenantID).Scan(&bVisible, &tenantsVisible)
	})
	if err != nil {
		t.Fatal(err)
	}
	if bVisible != 0 || tenantsVisible != 1 {
		t.Errorf("InTx(A) over a session set to B+platform: sees %d of B's notes and %d tenants, want 0 and 1", bVisible, tenantsVisible)
	}
	var notes, tenants int
	err = db.InGlobalTx(ctx, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, "SELECT (SELECT count(*) FROM notes), (SELECT count(*) FROM tenants)").Scan(&notes, &tenants)
	})
	if err != nil {
		t.Fatal(err)
	}
	if notes != 0 || tenants != 0 {
		t.Errorf("InGlobalTx over a session set to B+platform: sees %d notes, %d tenants, want 0", notes, tenants)
	}
}

// TestPlatformTx: operators read the tenants registry across tenants (its policy opts in), see
// no notes (no opt-in), and cannot write through the read-only platform policy.
func TestPlatformTx(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	var tenants, notes int
	var insertErr, updateErr error
	var updated int64
	err := f.app.InPlatformTx(ctx, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, "SELECT (SELECT count(*) FROM tenants), (SELECT count(*) FROM notes)").Scan(&tenants, &notes); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, "UPDATE tenants SET name = 'renamed'")
		updated, updateErr = tag.RowsAffected(), err
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if tenants != 2 || notes != 0 {
		t.Errorf("platform sees %d tenants and %d notes, want 2 and 0", tenants, notes)
	}
	if updateErr != nil || updated != 0 {
		t.Errorf("platform update: %d rows, err %v; want 0 rows", updated, updateErr)
	}
	insertErr = f.app.InPlatformTx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO tenants (tenant_id, name) VALUES ($1, 'new')", testenv.NewTenantID())
		return err
	})
	if pgCode(insertErr) != insufficientPrivilege {
		t.Errorf("platform insert: %v, want SQLSTATE %s", insertErr, insufficientPrivilege)
	}
}

// TestGlobalTx: non-tenant tables work normally in InGlobalTx (including their sequences).
func TestGlobalTx(t *testing.T) {
	t.Parallel()
	db := testenv.NewDatabase(t, spec)
	app := db.AppDB(t)
	ctx := context.Background()
	var id int64
	err := app.InGlobalTx(ctx, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, "INSERT INTO jobs (payload) VALUES ('p') RETURNING id").Scan(&id)
	})
	if err != nil {
		t.Fatal(err)
	}
	var payload string
	err = app.InGlobalTx(ctx, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, "SELECT payload FROM jobs WHERE id = $1", id).Scan(&payload)
	})
	if err != nil || payload != "p" {
		t.Fatalf("read back job: %q, %v", payload, err)
	}
}

// TestUserScope: per-user rows are invisible to another user of the same tenant and to the
// tenant without a user.
func TestUserScope(t *testing.T) {
	t.Parallel()
	db := testenv.NewDatabase(t, spec)
	app := db.AppDB(t)
	ctx := context.Background()
	tenant := testenv.NewTenant()
	u1, u2 := testenv.NewUser(tenant), testenv.NewUser(tenant)

	if _, err := pgtenant.Exec(ctx, app, u1, "INSERT INTO drafts (tenant_id, user_id, body) VALUES ($1, $2, 'mine')", u1.TenantID, u1.UserID); err != nil {
		t.Fatalf("own draft: %v", err)
	}
	tests := []struct {
		name     string
		scope    pgtenant.Scope
		want     int
		writeErr string
	}{
		{"owner user", u1, 1, ""},
		{"other user", u2, 0, insufficientPrivilege},
		{"no user", tenant, 0, insufficientPrivilege},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := pgtenant.QueryOne(ctx, app, tt.scope, "SELECT count(*) FROM drafts", nil, pgx.RowTo[int])
			if err != nil {
				t.Fatal(err)
			}
			if n != tt.want {
				t.Errorf("sees %d drafts, want %d", n, tt.want)
			}
			// Writing a draft for u1 from this scope.
			_, err = pgtenant.Exec(ctx, app, tt.scope, "INSERT INTO drafts (tenant_id, user_id, body) VALUES ($1, $2, 'x')", u1.TenantID, u1.UserID)
			if pgCode(err) != tt.writeErr || (tt.writeErr == "" && err != nil) {
				t.Errorf("write u1's draft: %v, want SQLSTATE %q", err, tt.writeErr)
			}
		})
	}
}
