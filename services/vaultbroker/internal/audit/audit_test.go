package audit_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/pkg/testenv"
	"github.com/bulkhead/bulkhead/services/vaultbroker/internal/audit"
	"github.com/bulkhead/bulkhead/services/vaultbroker/migrations"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// newDB returns a fresh database migrated the way the broker migrates at start-up
// (migrations.Apply: pgtenant's grants, then the append-only narrowing).
func newDB(t *testing.T) *testenv.Database {
	t.Helper()
	db := testenv.NewDatabase(t, testenv.DBSpec{Name: "vaultbroker", Migrations: migrations.FS})
	if err := migrations.Apply(context.Background(), db.OwnerURL, db.Roles.App, nil); err != nil {
		t.Fatalf("apply migrations: %v", err)
	}
	return db
}

func event(tenant, op string) audit.Event {
	return audit.Event{
		TenantID: tenant, RequestID: "req-1", Operation: op, Outcome: "OK",
		Subject: "user:0b0b0b0b-0000-4000-8000-000000000001", CallerService: "svc:connection",
		TokenID: "jti-1", ConnectionID: "0c0c0c0c-0000-4000-8000-000000000001", Version: 3,
	}
}

func TestAppendAndListWithinTenant(t *testing.T) {
	db := newDB(t)
	st := audit.NewStore(db.AppDB(t))
	ctx := context.Background()
	a, b := testenv.NewTenantID(), testenv.NewTenantID()
	for _, ev := range []audit.Event{event(a, "PutCredential"), event(a, "GetCredential"), event(b, "Encrypt")} {
		if err := st.Append(ctx, ev); err != nil {
			t.Fatalf("append: %v", err)
		}
	}
	got, err := st.List(ctx, a, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Operation != "GetCredential" || got[1].Operation != "PutCredential" {
		t.Fatalf("tenant A's events: %+v", got)
	}
	e := got[1]
	if e.TenantID != a || e.ID == "" || e.Version != 3 || e.CallerService != "svc:connection" || e.TokenID != "jti-1" || time.Since(e.OccurredAt) > time.Minute {
		t.Fatalf("event read back: %+v", e)
	}
	if got, _ := st.List(ctx, b, 10); len(got) != 1 {
		t.Fatalf("tenant B sees %d events, want 1", len(got))
	}
	bad := event(a, "GetCredential")
	bad.ConnectionID = "sk_live_pasted_by_mistake"
	if err := st.Append(ctx, bad); err == nil {
		t.Fatal("an event with a connection id that is not a UUID was stored")
	}
	if err := st.Append(ctx, audit.Event{TenantID: a}); !errors.Is(err, audit.ErrInvalid) {
		t.Fatalf("incomplete event: %v, want ErrInvalid", err)
	}
}

// TestAppendOnly tries to change history with every role that could: the app role is refused
// by privileges, the owner by row-level security (no UPDATE/DELETE policy) and the trigger
// (TRUNCATE), a superuser by the trigger. Nothing changes.
func TestAppendOnly(t *testing.T) {
	db := newDB(t)
	ctx := context.Background()
	tenant := testenv.NewTenantID()
	if err := audit.NewStore(db.AppDB(t)).Append(ctx, event(tenant, "GetCredential")); err != nil {
		t.Fatal(err)
	}
	app, owner, super := db.AppPool(t), db.OwnerPool(t), db.SuperPool(t)
	scoped := func(pool *pgxpool.Pool, sql string) (int64, error) {
		var n int64
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SELECT set_config('app.tenant_id', $1, true)", tenant); err != nil {
				return err
			}
			tag, err := tx.Exec(ctx, sql)
			n = tag.RowsAffected()
			return err
		})
		return n, err
	}
	const (
		update   = "UPDATE audit_events SET outcome = 'OK', reason = ''"
		del      = "DELETE FROM audit_events"
		truncate = "TRUNCATE audit_events"
	)
	cases := []struct {
		name     string
		pool     *pgxpool.Pool
		sql      string
		wantCode string // SQLSTATE; "" means no error and no row touched
	}{
		{"app update", app, update, "42501"},
		{"app delete", app, del, "42501"},
		{"app truncate", app, truncate, "42501"},
		{"app insert for another tenant", app, "INSERT INTO audit_events (tenant_id, request_id, operation, outcome, subject) VALUES ('" + testenv.NewTenantID() + "', 'r', 'Get', 'OK', 'svc:x')", "42501"},
		{"owner update", owner, update, ""},
		{"owner delete", owner, del, ""},
		{"owner truncate", owner, truncate, "42501"},
		{"superuser update", super, update, "42501"},
		{"superuser delete", super, del, "42501"},
		{"superuser truncate", super, truncate, "42501"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n, err := scoped(tc.pool, tc.sql)
			var pgErr *pgconn.PgError
			switch {
			case tc.wantCode == "" && (err != nil || n != 0):
				t.Fatalf("rows %d, err %v; want nothing touched", n, err)
			case tc.wantCode != "" && (!errors.As(err, &pgErr) || pgErr.Code != tc.wantCode):
				t.Fatalf("err %v, want SQLSTATE %s", err, tc.wantCode)
			}
		})
	}
	var count int
	var outcome string
	if err := super.QueryRow(ctx, "SELECT count(*), min(outcome) FROM audit_events").Scan(&count, &outcome); err != nil || count != 1 || outcome != "OK" {
		t.Fatalf("history after the attempts: %d rows, outcome %q, err %v", count, outcome, err)
	}
}

// TestAppendOnlyWithWidenedGrants: pgtenant.Migrate alone re-grants UPDATE and DELETE to the
// app role (as it does on every run). Even then the app role changes nothing: there is no
// UPDATE or DELETE policy under forced row-level security.
func TestAppendOnlyWithWidenedGrants(t *testing.T) {
	db := newDB(t)
	ctx := context.Background()
	if err := pgtenant.Migrate(ctx, db.OwnerURL, migrations.FS, pgtenant.MigrateOptions{AppRole: db.Roles.App, VersionTable: migrations.VersionTable}); err != nil {
		t.Fatal(err)
	}
	tenant := testenv.NewTenantID()
	tdb := db.AppDB(t)
	if err := audit.NewStore(tdb).Append(ctx, event(tenant, "Decrypt")); err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{"UPDATE audit_events SET outcome = 'OK'", "DELETE FROM audit_events"} {
		tag, err := pgtenant.Exec(ctx, tdb, pgtenant.Scope{TenantID: tenant}, sql)
		if err != nil || tag.RowsAffected() != 0 {
			t.Fatalf("%s with widened grants: %d rows, %v; want 0 rows", sql, tag.RowsAffected(), err)
		}
	}
	if got, _ := audit.NewStore(tdb).List(ctx, tenant, 10); len(got) != 1 {
		t.Fatalf("history changed: %+v", got)
	}
}

func TestVerifyIsolation(t *testing.T) {
	db := newDB(t)
	if err := pgtenant.VerifyIsolation(context.Background(), db.SuperURL, db.Roles.App); err != nil {
		t.Fatal(err)
	}
}
