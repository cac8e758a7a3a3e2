package testenv_test

import (
	"context"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var itemsSpec = testenv.DBSpec{
	Name: "testenv",
	Migrations: fstest.MapFS{
		"00001_items.sql": {Data: []byte(`-- +goose Up
CREATE TABLE items (
    tenant_id uuid NOT NULL,
    id        uuid NOT NULL DEFAULT gen_random_uuid(),
    UNIQUE (tenant_id, id)
);
ALTER TABLE items ENABLE ROW LEVEL SECURITY;
ALTER TABLE items FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON items
    USING      (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
-- +goose Down
DROP TABLE items;
`)},
	},
}

// TestNewDatabase: parallel callers each get their own migrated database, reachable as the
// three roles, and a write in one is invisible in the others.
func TestNewDatabase(t *testing.T) {
	t.Parallel()
	const n = 4
	var (
		mu    sync.Mutex
		names = map[string]bool{}
	)
	for i := range n {
		t.Run("db", func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := testenv.NewDatabase(t, itemsSpec)
			mu.Lock()
			if names[db.Name] {
				t.Errorf("database %s handed out twice", db.Name)
			}
			names[db.Name] = true
			mu.Unlock()

			for _, c := range []struct {
				url, wantUser string
			}{
				{db.SuperURL, ""},
				{db.OwnerURL, db.Roles.Owner},
				{db.AppURL, db.Roles.App},
			} {
				conn, err := pgx.Connect(ctx, c.url)
				if err != nil {
					t.Fatal(err)
				}
				var user, dbName string
				var super bool
				err = conn.QueryRow(ctx, "SELECT current_user, current_database(), (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)").Scan(&user, &dbName, &super)
				conn.Close(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if dbName != db.Name || (c.wantUser == "" && !super) || (c.wantUser != "" && (user != c.wantUser || super)) {
					t.Errorf("%s: connected as %s (super %v) to %s", c.url, user, super, dbName)
				}
			}

			// Each database starts empty and migrated; this test's write stays here.
			tenant := testenv.NewTenant()
			app := db.AppDB(t)
			count := func() int {
				n, err := pgtenant.QueryOne(ctx, app, tenant, "SELECT count(*) FROM items", nil, pgx.RowTo[int])
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
			var total int
			if err := db.SuperPool(t).QueryRow(ctx, "SELECT count(*) FROM items").Scan(&total); err != nil {
				t.Fatal(err)
			}
			if total != 0 {
				t.Errorf("fresh database holds %d items", total)
			}
			if _, err := pgtenant.Exec(ctx, app, tenant, "INSERT INTO items (tenant_id) VALUES ($1)", tenant.TenantID); err != nil {
				t.Fatal(err)
			}
			if got := count(); got != 1 {
				t.Errorf("items = %d after one insert (iteration %d)", got, i)
			}
			if err := pgtenant.VerifyIsolation(ctx, db.SuperURL, db.Roles.App); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestDatabaseDroppedAtCleanup: a test's database is gone once the test has finished.
func TestDatabaseDroppedAtCleanup(t *testing.T) {
	t.Parallel()
	var name string
	t.Run("user", func(t *testing.T) {
		db := testenv.NewDatabase(t, itemsSpec)
		name = db.Name
		db.AppPool(t) // an open pool must not block the drop
	})
	conn, err := pgx.Connect(context.Background(), testenv.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var exists bool
	if err := conn.QueryRow(context.Background(), "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if name == "" || exists {
		t.Errorf("database %q still exists after its test ended", name)
	}
}

func TestTenantFixtures(t *testing.T) {
	t.Parallel()
	a, b := testenv.TwoTenants()
	u := testenv.NewUser(a)
	for _, s := range []pgtenant.Scope{a, b, u} {
		if err := s.Validate(); err != nil {
			t.Errorf("%+v: %v", s, err)
		}
	}
	if a.TenantID == b.TenantID || a.UserID != "" || u.TenantID != a.TenantID || u.UserID == "" {
		t.Errorf("TwoTenants/NewUser: a=%+v b=%+v u=%+v", a, b, u)
	}
	if _, err := uuid.Parse(testenv.NewTenantID()); err != nil {
		t.Error(err)
	}
}
