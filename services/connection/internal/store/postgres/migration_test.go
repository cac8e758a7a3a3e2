package postgres_test

import (
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/uuid"

	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/pkg/testenv"
	"github.com/bulkhead/bulkhead/services/connection/migrations"
)

// migrationsBefore returns the migrations numbered below version.
func migrationsBefore(t *testing.T, version string) fs.FS {
	t.Helper()
	out := fstest.MapFS{}
	entries, err := fs.ReadDir(migrations.FS, ".")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".sql") && e.Name() < version {
			b, err := fs.ReadFile(migrations.FS, e.Name())
			if err != nil {
				t.Fatal(err)
			}
			out[e.Name()] = &fstest.MapFile{Data: b}
		}
	}
	return out
}

// TestMigrationRevokedAtBackfill: migration 00006 gives connections revoked before it a
// revoked_at — their connection.revoked event's time, or their last update without one — and
// none to the others, although forced row-level security hides every row from the owner role
// running it; and FORCE is back on both tables afterwards (the backfill lifts it for its one
// statement, inside the migration's transaction).
func TestMigrationRevokedAtBackfill(t *testing.T) {
	t.Parallel()
	// Its own service name: testenv builds one template per name, and this one stops at 00005.
	db := testenv.NewDatabase(t, testenv.DBSpec{Name: "connmig", Migrations: migrationsBefore(t, "00006")})
	ctx := ctxT(t)
	super := db.SuperPool(t)
	tenant := uuid.NewString()
	revokedAt := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	updatedAt := time.Date(2026, 1, 9, 0, 0, 0, 0, time.UTC)
	withEvent, withoutEvent, active := uuid.NewString(), uuid.NewString(), uuid.NewString()
	insert := `INSERT INTO connections (tenant_id, id, integration, auth_type, scope, creator, status,
		revocation_state, revocation_next_at, credential_version, updated_at)
		VALUES ($1, $2, 'github', 'oauth2', 'org', 'user:x', $3, $4, $5, 1, $6)`
	for _, r := range []struct {
		id, status, state string
		next              any
	}{
		{withEvent, "revoked", "pending", updatedAt.Add(time.Hour)},
		{withoutEvent, "revoked", "confirmed", nil},
		{active, "active", "", nil},
	} {
		if _, err := super.Exec(ctx, insert, tenant, r.id, r.status, r.state, r.next, updatedAt); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := super.Exec(ctx, `INSERT INTO outbox (tenant_id, connection_id, event_type, created_at)
		VALUES ($1, $2, 'connection.created', $3), ($1, $2, 'connection.revoked', $4)`,
		tenant, withEvent, revokedAt.Add(-time.Hour), revokedAt); err != nil {
		t.Fatal(err)
	}

	err := pgtenant.Migrate(ctx, db.OwnerURL, migrations.FS, pgtenant.MigrateOptions{
		AppRole: db.Roles.App, VersionTable: "connmig_schema_version",
	})
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]*time.Time{withEvent: &revokedAt, withoutEvent: &updatedAt, active: nil} {
		var got *time.Time
		if err := super.QueryRow(ctx, `SELECT revoked_at FROM connections WHERE id = $1`, id).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if (got == nil) != (want == nil) || (got != nil && !got.Equal(*want)) {
			t.Errorf("connection %s: revoked_at %v, want %v", id, got, want)
		}
	}
	rows, err := super.Query(ctx, `SELECT relname, relrowsecurity AND relforcerowsecurity FROM pg_class WHERE relname IN ('connections', 'outbox')`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var name string
		var forced bool
		if err := rows.Scan(&name, &forced); err != nil {
			t.Fatal(err)
		}
		if !forced {
			t.Errorf("%s: row-level security is no longer forced after the migration", name)
		}
		n++
	}
	if err := rows.Err(); err != nil || n != 2 {
		t.Fatalf("pg_class: %d tables, %v", n, err)
	}
	// And the app role still sees nothing without a tenant.
	var visible int
	if err := db.AppPool(t).QueryRow(ctx, `SELECT count(*) FROM connections`).Scan(&visible); err != nil || visible != 0 {
		t.Fatalf("the app role without a tenant sees %d connections (%v)", visible, err)
	}
}
