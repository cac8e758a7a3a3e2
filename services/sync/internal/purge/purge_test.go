package purge_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/pkg/testenv"
	"github.com/bulkhead/bulkhead/services/sync/internal/engine"
	"github.com/bulkhead/bulkhead/services/sync/internal/purge"
	"github.com/bulkhead/bulkhead/services/sync/internal/webhook"
	"github.com/bulkhead/bulkhead/services/sync/migrations"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func testCtx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

type env struct {
	db    *testenv.Database
	super *pgxpool.Pool
	app   *pgxpool.Pool
	river *river.Client[pgx.Tx]
}

func newEnv(t *testing.T) *env {
	t.Helper()
	db := testenv.NewDatabase(t, testenv.DBSpec{Name: "sync", Migrations: migrations.FS})
	if err := migrations.Apply(testCtx(t), db.OwnerURL, db.Roles.App, nil); err != nil {
		t.Fatal(err)
	}
	app := db.AppPool(t)
	// An insert-only River client (never started): the purge needs River's job API, not workers.
	rc, err := river.NewClient(riverpgxv5.New(app), &river.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return &env{db: db, super: db.SuperPool(t), app: app, river: rc}
}

// seed gives tenantID n rows in every tenant table and n River jobs of each tenant kind.
func (e *env) seed(t *testing.T, tenantID string, n int) {
	t.Helper()
	ctx := testCtx(t)
	stmts := []string{
		`INSERT INTO syncs (tenant_id, connection_id, integration, model, mode, frequency_secs)
		 SELECT $1, gen_random_uuid(), 'providertest', 'records', 'full', 3600 FROM generate_series(1, $2)`,
		`INSERT INTO records (tenant_id, connection_id, model, external_id, content_hash, payload, action, seq, last_seen_run)
		 SELECT $1, gen_random_uuid(), 'records', 'r' || g, sha256(g::text::bytea), '{}', 'added', nextval('record_seq'), 1
		 FROM generate_series(1, $2) g`,
		`INSERT INTO webhook_endpoints (tenant_id, url, events, secret)
		 SELECT $1, 'https://receiver.example.com/' || g, ARRAY['sync.completed'], sha256('k'::bytea) FROM generate_series(1, $2) g`,
		// Every endpoint gets one delivery: deleting an endpoint first would cascade.
		`INSERT INTO webhook_deliveries (tenant_id, endpoint_id, event_id, event, body, state)
		 SELECT $1, id, gen_random_uuid(), 'sync.completed', '{}', 'dead_letter' FROM webhook_endpoints WHERE tenant_id = $1`,
	}
	for _, s := range stmts {
		args := []any{tenantID}
		if strings.Contains(s, "$2") {
			args = append(args, n)
		}
		if _, err := e.super.Exec(ctx, s, args...); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	later := &river.InsertOpts{ScheduledAt: time.Now().Add(time.Hour)}
	var params []river.InsertManyParams
	for range n {
		params = append(params,
			river.InsertManyParams{Args: engine.RunArgs{TenantID: tenantID, ConnectionID: uuid.NewString(), Model: "records"}, InsertOpts: later},
			river.InsertManyParams{Args: webhook.DeliverArgs{TenantID: tenantID, DeliveryID: uuid.NewString()}, InsertOpts: later})
	}
	if _, err := e.river.InsertMany(ctx, params); err != nil {
		t.Fatal(err)
	}
}

func (e *env) counts(t *testing.T, tenantID string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, table := range purge.Tables {
		q := "SELECT count(*) FROM " + pgx.Identifier{table}.Sanitize() + " WHERE tenant_id = $1"
		if table == "river_job" {
			q = "SELECT count(*) FROM river_job WHERE args @> jsonb_build_object('tenant_id', $1::text)"
		}
		var n int64
		if err := e.super.QueryRow(testCtx(t), q, tenantID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		out[table] = n
	}
	return out
}

// TestPurgeIsBoundedAndStaysInTheTenant: each Purge deletes at most Batch rows per table, is
// done only when the tenant has nothing left, and never touches another tenant's rows.
func TestPurgeIsBoundedAndStaysInTheTenant(t *testing.T) {
	e := newEnv(t)
	a, b := uuid.NewString(), uuid.NewString()
	e.seed(t, a, 5)
	e.seed(t, b, 5)
	beforeB := e.counts(t, b)
	p, err := purge.New(purge.Config{DB: pgtenant.New(e.app), Jobs: e.river, Batch: 2})
	if err != nil {
		t.Fatal(err)
	}
	var calls int
	for {
		calls++
		res, err := p.Purge(testCtx(t), a)
		if err != nil {
			t.Fatal(err)
		}
		for table, n := range res.ByTable {
			if n > 2 {
				t.Fatalf("call %d deleted %d rows of %s, more than the batch", calls, n, table)
			}
		}
		if res.Done {
			break
		}
		if calls > 20 {
			t.Fatalf("not done after %d calls: %v", calls, e.counts(t, a))
		}
	}
	// 5 rows per table (10 jobs) in batches of 2: at least 5 calls.
	if calls < 5 {
		t.Fatalf("done after %d calls, batches were not bounded", calls)
	}
	for table, n := range e.counts(t, a) {
		if n != 0 {
			t.Errorf("%s: %d rows of the purged tenant left", table, n)
		}
	}
	afterB := e.counts(t, b)
	for table, n := range beforeB {
		if afterB[table] != n {
			t.Errorf("%s: B had %d rows, now %d", table, n, afterB[table])
		}
	}
	res, err := p.Purge(testCtx(t), a)
	if err != nil || !res.Done || res.Deleted != 0 {
		t.Fatalf("purging again = %+v, %v; want done, nothing deleted", res, err)
	}
}

// TestRecordsDeletePolicy tries to break migration 00004's DELETE policy on records: the app
// role deletes only in its transaction's tenant, and nothing without a tenant.
func TestRecordsDeletePolicy(t *testing.T) {
	e := newEnv(t)
	a, b := uuid.NewString(), uuid.NewString()
	e.seed(t, a, 3)
	tdb := pgtenant.New(e.app)
	attempts := map[string]func(q string) (int64, error){
		"in another tenant's scope": func(q string) (n int64, err error) {
			err = tdb.InTx(testCtx(t), pgtenant.Scope{TenantID: b}, func(tx pgx.Tx) error {
				tag, err := tx.Exec(testCtx(t), q, a)
				n = tag.RowsAffected()
				return err
			})
			return n, err
		},
		"in the platform scope": func(q string) (n int64, err error) {
			err = tdb.InPlatformTx(testCtx(t), func(tx pgx.Tx) error {
				tag, err := tx.Exec(testCtx(t), q, a)
				n = tag.RowsAffected()
				return err
			})
			return n, err
		},
		"with no scope": func(q string) (int64, error) {
			tag, err := e.app.Exec(testCtx(t), q, a)
			return tag.RowsAffected(), err
		},
	}
	for name, attempt := range attempts {
		for _, table := range []string{"records", "syncs", "webhook_deliveries", "webhook_endpoints"} {
			n, err := attempt("DELETE FROM " + table + " WHERE tenant_id = $1 OR true")
			if err != nil {
				t.Fatalf("%s, %s: %v", name, table, err)
			}
			if n != 0 {
				t.Errorf("%s: deleted %d rows of another tenant's %s", name, n, table)
			}
		}
	}
	if got := e.counts(t, a); got["records"] != 3 || got["syncs"] != 3 || got["webhook_endpoints"] != 3 {
		t.Fatalf("A's rows after the attempts = %v", got)
	}
}
