package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/pkg/testenv"
	"github.com/bulkhead/bulkhead/services/sync/internal/store"
	"github.com/bulkhead/bulkhead/services/sync/migrations"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var spec = testenv.DBSpec{Name: "sync", Migrations: migrations.FS}

func newDB(t testing.TB) (*testenv.Database, *pgtenant.DB) {
	t.Helper()
	db := testenv.NewDatabase(t, spec)
	return db, db.AppDB(t)
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

// fixture is one sync of a tenant with a run in progress.
type fixture struct {
	db    *pgtenant.DB
	scope pgtenant.Scope
	sync  *store.Sync
}

func newSync(t testing.TB, db *pgtenant.DB, scope pgtenant.Scope, mode store.Mode) *fixture {
	t.Helper()
	f := &fixture{db: db, scope: scope}
	err := db.InTx(ctx(t), scope, func(tx pgx.Tx) error {
		s, err := store.UpsertSync(ctx(t), tx, scope.TenantID, store.SyncSpec{
			ConnectionID: uuid.NewString(), Integration: "providertest", Model: "records", Mode: mode, Frequency: time.Hour,
		})
		f.sync = s
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// begin starts (or resumes) a run.
func (f *fixture) begin(t testing.TB) int64 {
	t.Helper()
	err := f.db.InTx(ctx(t), f.scope, func(tx pgx.Tx) error {
		s, err := store.GetSync(ctx(t), tx, f.scope.TenantID, f.sync.ConnectionID, f.sync.Model, true)
		if err != nil {
			return err
		}
		f.sync, err = store.BeginRun(ctx(t), tx, s, 1)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return f.sync.Run.Number
}

func (f *fixture) apply(t testing.TB, run int64, next string, recs ...store.PageRecord) (store.PageResult, error) {
	t.Helper()
	var res store.PageResult
	err := f.db.InTx(ctx(t), f.scope, func(tx pgx.Tx) error {
		var err error
		res, err = store.ApplyPage(ctx(t), tx, f.scope.TenantID, f.sync.ID, run, recs, next)
		return err
	})
	return res, err
}

func (f *fixture) finish(t testing.TB, run int64) store.FinishResult {
	t.Helper()
	var res store.FinishResult
	err := f.db.InTx(ctx(t), f.scope, func(tx pgx.Tx) error {
		var err error
		res, err = store.FinishRun(ctx(t), tx, f.scope.TenantID, f.sync.ID, run, time.Now().Add(time.Hour))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func (f *fixture) feed(t testing.TB, after int64) []store.Record {
	t.Helper()
	var out []store.Record
	err := f.db.InTx(ctx(t), f.scope, func(tx pgx.Tx) error {
		var err error
		out, err = store.ListFeed(ctx(t), tx, f.scope.TenantID, store.FeedQuery{
			ConnectionID: f.sync.ConnectionID, Model: f.sync.Model, After: after, Limit: 1000,
		})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func rec(id, name string) store.PageRecord {
	return store.PageRecord{ExternalID: id, Payload: fmt.Appendf(nil, `{"id":%q,"name":%q}`, id, name)}
}

func summary(rs []store.Record) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.ExternalID + ":" + string(r.Action)
	}
	return out
}

func TestVerifyIsolation(t *testing.T) {
	db := testenv.NewDatabase(t, spec)
	// River's tables too: Apply is what production runs.
	if err := migrations.Apply(ctx(t), db.OwnerURL, db.Roles.App, nil); err != nil {
		t.Fatal(err)
	}
	if err := pgtenant.VerifyIsolation(ctx(t), db.SuperURL, db.Roles.App); err != nil {
		t.Fatal(err)
	}
}

func TestChangeDetection(t *testing.T) {
	_, db := newDB(t)
	f := newSync(t, db, testenv.NewTenant(), store.ModeIncremental)
	run := f.begin(t)
	res, err := f.apply(t, run, "p2", rec("a", "A"), rec("b", "B"), rec("c", "C"))
	if err != nil || res.Added != 3 || res.Updated != 0 || res.LastSeq == 0 {
		t.Fatalf("first page = %+v, %v; want 3 added", res, err)
	}
	first := f.feed(t, 0)
	if got := summary(first); !slices.Equal(got, []string{"a:added", "b:added", "c:added"}) {
		t.Fatalf("feed = %v", got)
	}
	cursor := first[len(first)-1].Seq

	// The same records again (an inclusive "updated since" filter re-sends them): nothing.
	res, err = f.apply(t, run, "", rec("a", "A"), rec("b", "B"))
	if err != nil || res != (store.PageResult{}) {
		t.Fatalf("unchanged page = %+v, %v; want nothing", res, err)
	}
	if got := f.feed(t, cursor); len(got) != 0 {
		t.Fatalf("feed after unchanged page = %v, want empty", summary(got))
	}
	f.finish(t, run)

	// A changed record and a duplicate id in one page (the last occurrence wins).
	run = f.begin(t)
	res, err = f.apply(t, run, "", rec("b", "B2"), rec("d", "D"), rec("b", "B3"))
	if err != nil || res.Added != 1 || res.Updated != 1 {
		t.Fatalf("changed page = %+v, %v; want 1 added 1 updated", res, err)
	}
	got := f.feed(t, cursor)
	if s := summary(got); !slices.Equal(s, []string{"b:updated", "d:added"}) {
		t.Fatalf("feed after change = %v", s)
	}
	if string(got[0].Payload) != `{"id": "b", "name": "B3"}` {
		t.Fatalf("payload = %s", got[0].Payload)
	}
	// Unchanged records kept their place in the feed.
	if all := f.feed(t, 0); !slices.Equal(summary(all), []string{"a:added", "c:added", "b:updated", "d:added"}) {
		t.Fatalf("whole feed = %v", summary(all))
	}
}

func TestFullRunDeletesOnlyWhenFinished(t *testing.T) {
	_, db := newDB(t)
	f := newSync(t, db, testenv.NewTenant(), store.ModeFull)
	run := f.begin(t)
	if _, err := f.apply(t, run, "", rec("a", "A"), rec("b", "B"), rec("c", "C")); err != nil {
		t.Fatal(err)
	}
	if fin := f.finish(t, run); fin.Deleted != 0 || fin.Run.Added != 3 {
		t.Fatalf("first run = %+v", fin)
	}
	cursor := f.feed(t, 0)[2].Seq

	// Run 2 sees a and b on its first page; c is not deleted before the run finishes.
	run = f.begin(t)
	if _, err := f.apply(t, run, "p2", rec("a", "A"), rec("b", "B")); err != nil {
		t.Fatal(err)
	}
	if got := f.feed(t, cursor); len(got) != 0 {
		t.Fatalf("mid-run feed = %v, want no change", summary(got))
	}
	// A failed run never deletes, whatever it saw.
	err := db.InTx(ctx(t), f.scope, func(tx pgx.Tx) error {
		return store.FailRun(ctx(t), tx, f.scope.TenantID, f.sync.ID, run, "provider exploded", true, time.Now())
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := f.feed(t, cursor); len(got) != 0 {
		t.Fatalf("feed after failed run = %v, want no change", summary(got))
	}

	// Run 3 finishes having seen a and b (over two pages): c is deleted, once.
	run = f.begin(t)
	if run != 3 {
		t.Fatalf("run number = %d, want 3 (a failed run is not resumed)", run)
	}
	if _, err := f.apply(t, run, "p2", rec("a", "A")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.apply(t, run, "", rec("b", "B")); err != nil {
		t.Fatal(err)
	}
	fin := f.finish(t, run)
	if fin.Deleted != 1 {
		t.Fatalf("deleted = %d, want 1", fin.Deleted)
	}
	got := f.feed(t, cursor)
	if s := summary(got); !slices.Equal(s, []string{"c:deleted"}) || got[0].DeletedAt == nil {
		t.Fatalf("feed after full run = %v", s)
	}
	// c comes back: added again.
	run = f.begin(t)
	if res, err := f.apply(t, run, "", rec("a", "A"), rec("b", "B"), rec("c", "C")); err != nil || res.Added != 1 {
		t.Fatalf("resurrection = %+v, %v", res, err)
	}
	f.finish(t, run)
	if s := summary(f.feed(t, got[0].Seq)); !slices.Equal(s, []string{"c:added"}) {
		t.Fatalf("feed after resurrection = %v", s)
	}
}

func TestApplyPageRefusals(t *testing.T) {
	_, db := newDB(t)
	a, b := testenv.TwoTenants()
	tests := []struct {
		name  string
		setup func(f *fixture) (scope pgtenant.Scope, run int64)
		want  error
	}{
		{"current run", func(f *fixture) (pgtenant.Scope, int64) { return f.scope, f.begin(t) }, nil},
		{"superseded run", func(f *fixture) (pgtenant.Scope, int64) {
			run := f.begin(t)
			f.finish(t, run)
			f.begin(t)
			return f.scope, run
		}, store.ErrRunSuperseded},
		{"paused sync", func(f *fixture) (pgtenant.Scope, int64) {
			run := f.begin(t)
			err := db.InTx(ctx(t), f.scope, func(tx pgx.Tx) error {
				_, err := store.SetState(ctx(t), tx, f.scope.TenantID, f.sync.ID, store.StatePaused)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			return f.scope, run
		}, store.ErrPaused},
		{"another tenant's sync", func(f *fixture) (pgtenant.Scope, int64) { return b, f.begin(t) }, store.ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newSync(t, db, a, store.ModeFull)
			scope, run := tc.setup(f)
			// The transaction commits even when ApplyPage refuses: a refusal must have written
			// nothing, not merely rely on the caller rolling back.
			var applyErr error
			err := db.InTx(ctx(t), scope, func(tx pgx.Tx) error {
				_, applyErr = store.ApplyPage(ctx(t), tx, scope.TenantID, f.sync.ID, run, []store.PageRecord{rec("x", "X")}, "next")
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if !errors.Is(applyErr, tc.want) {
				t.Fatalf("ApplyPage = %v, want %v", applyErr, tc.want)
			}
			if tc.want == nil {
				return
			}
			if len(f.feed(t, 0)) != 0 {
				t.Fatal("a refused page wrote records")
			}
			var s *store.Sync
			err = db.InTx(ctx(t), a, func(tx pgx.Tx) error {
				s, err = store.GetSync(ctx(t), tx, a.TenantID, f.sync.ConnectionID, f.sync.Model, false)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if s.Run.Pages != 0 || s.Position.PageCursor != "" {
				t.Fatalf("a refused page moved the run: pages %d, cursor %q", s.Run.Pages, s.Position.PageCursor)
			}
		})
	}
}

// TestRecordsIsolation tries to reach tenant A's records as tenant B: through the store, with
// a raw query that forgets the tenant, and by writing a row for A.
func TestRecordsIsolation(t *testing.T) {
	db, tdb := newDB(t)
	a, b := testenv.TwoTenants()
	f := newSync(t, tdb, a, store.ModeFull)
	run := f.begin(t)
	if _, err := f.apply(t, run, "", rec("secret", "A's")); err != nil {
		t.Fatal(err)
	}
	err := tdb.InTx(ctx(t), b, func(tx pgx.Tx) error {
		recs, err := store.ListFeed(ctx(t), tx, a.TenantID, store.FeedQuery{Limit: 10})
		if err != nil || len(recs) != 0 {
			return fmt.Errorf("B listed A's feed: %d records, %v", len(recs), err)
		}
		var n int
		if err := tx.QueryRow(ctx(t), "SELECT count(*) FROM records").Scan(&n); err != nil || n != 0 {
			return fmt.Errorf("B counted %d records of others, %v", n, err)
		}
		if _, err := store.GetSync(ctx(t), tx, a.TenantID, f.sync.ConnectionID, f.sync.Model, false); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("B got A's sync: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = tdb.InTx(ctx(t), b, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx(t), `INSERT INTO records (tenant_id, connection_id, model, external_id, content_hash, payload, action, seq, last_seen_run)
			VALUES ($1, $2, 'records', 'planted', decode(repeat('00', 32), 'hex'), '{}', 'added', 1, 1)`, a.TenantID, f.sync.ConnectionID)
		return err
	})
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
		t.Fatalf("B writing a row of A = %v, want SQLSTATE 42501", err)
	}
	// The raw app pool with no tenant at all sees nothing either.
	var n int
	if err := db.AppPool(t).QueryRow(ctx(t), "SELECT count(*) FROM records").Scan(&n); err != nil || n != 0 {
		t.Fatalf("unscoped app connection counted %d records, %v", n, err)
	}
}

// TestFeedStableUnderConcurrentWriters pages the feed with a cursor while two syncs of the
// same tenant commit pages concurrently: every change must be read exactly once.
func TestFeedStableUnderConcurrentWriters(t *testing.T) {
	_, db := newDB(t)
	tenant := testenv.NewTenant()
	const writers, pages, perPage = 3, 30, 20
	fs := make([]*fixture, writers)
	runs := make([]int64, writers)
	for i := range fs {
		fs[i] = newSync(t, db, tenant, store.ModeIncremental)
		runs[i] = fs[i].begin(t)
	}
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	done := make(chan struct{})
	for i, f := range fs {
		wg.Go(func() {
			for p := range pages {
				recs := make([]store.PageRecord, perPage)
				for j := range recs {
					recs[j] = rec(fmt.Sprintf("w%d-p%d-r%d", i, p, j), "x")
				}
				if _, err := f.apply(t, runs[i], "more", recs...); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	go func() { wg.Wait(); close(done) }()

	seen := map[string]int{}
	var cursor int64
	finished := false
	for {
		var page []store.Record
		err := db.InTx(ctx(t), tenant, func(tx pgx.Tx) error {
			var err error
			page, err = store.ListFeed(ctx(t), tx, tenant.TenantID, store.FeedQuery{After: cursor, Limit: 37})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page {
			seen[r.ConnectionID+"/"+r.ExternalID]++
			cursor = r.Seq
		}
		if finished && len(page) == 0 {
			break
		}
		select {
		case <-done:
			finished = true // one more full pass after the last commit
		default:
		}
	}
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if len(seen) != writers*pages*perPage {
		t.Fatalf("read %d distinct changes, want %d", len(seen), writers*pages*perPage)
	}
	for k, n := range seen {
		if n != 1 {
			t.Fatalf("change %s read %d times", k, n)
		}
	}
}

func TestCursor(t *testing.T) {
	for _, seq := range []int64{0, 1, 1 << 40} {
		got, err := store.DecodeCursor(store.EncodeCursor(seq))
		if err != nil || got != seq {
			t.Fatalf("round trip %d = %d, %v", seq, got, err)
		}
	}
	for _, bad := range []string{"!!", "djEuLTE", "eHg"} {
		if _, err := store.DecodeCursor(bad); !errors.Is(err, store.ErrBadCursor) {
			t.Fatalf("DecodeCursor(%q) = %v, want ErrBadCursor", bad, err)
		}
	}
}
