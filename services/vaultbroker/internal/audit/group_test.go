package audit_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/bulkhead/bulkhead/pkg/testenv"
	"github.com/bulkhead/bulkhead/services/vaultbroker/internal/audit"
)

// TestGroupConcurrent appends from many goroutines in two tenants: every Append returns nil,
// and each tenant reads back exactly its own rows, every field intact.
func TestGroupConcurrent(t *testing.T) {
	db := newDB(t)
	st := audit.NewStore(db.AppDB(t))
	g := audit.NewGroup(st, audit.GroupConfig{MaxBatch: 8})
	ctx := context.Background()
	tenants := []string{testenv.NewTenantID(), testenv.NewTenantID()}
	const perTenant = 40
	var wg sync.WaitGroup
	errs := make(chan error, 2*perTenant)
	for _, tenant := range tenants {
		for i := range perTenant {
			wg.Go(func() {
				ev := event(tenant, "GetCredential")
				ev.RequestID = fmt.Sprintf("req-%d", i)
				ev.Version = int64(i % 3) // 0: no version (NULL)
				errs <- g.Append(ctx, ev)
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("append: %v", err)
		}
	}
	for _, tenant := range tenants {
		got, err := st.List(ctx, tenant, 1000)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, e := range got {
			want := event(tenant, "GetCredential")
			var i int
			if _, err := fmt.Sscanf(e.RequestID, "req-%d", &i); err != nil || seen[e.RequestID] {
				t.Fatalf("unexpected row %+v", e)
			}
			seen[e.RequestID] = true
			if e.TenantID != tenant || e.Version != int64(i%3) || e.Subject != want.Subject || e.CallerService != want.CallerService ||
				e.TokenID != want.TokenID || e.ConnectionID != want.ConnectionID || e.Outcome != want.Outcome {
				t.Fatalf("row read back: %+v", e)
			}
		}
		if len(seen) != perTenant {
			t.Fatalf("tenant %s has %d rows, want %d", tenant, len(seen), perTenant)
		}
	}
}

// TestGroupCommitsTogether holds the table locked so that one write waits in PostgreSQL while
// more events queue behind it; released, the queued events of that tenant are committed in one
// transaction (rows of one transaction share their xmin), and an event of another tenant never
// joins it. A row the table refuses (a subject over the length limit) fails only its own
// caller: the batch's other rows are still committed.
func TestGroupCommitsTogether(t *testing.T) {
	db := newDB(t)
	g := audit.NewGroup(audit.NewStore(db.AppDB(t)), audit.GroupConfig{})
	super := db.SuperPool(t)
	ctx := context.Background()
	good := "user:0b0b0b0b-0000-4000-8000-000000000001"
	type item struct{ tenant, id, subject string }

	// held appends first while the table is locked, queues items behind it, releases the
	// lock and returns each append's error and each committed row's (tenant, xmin) by id.
	type row struct{ tenant, xmin string }
	held := func(t *testing.T, first item, queued []item) (map[string]error, map[string]row) {
		t.Helper()
		tx, err := super.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback(ctx) }()
		if _, err := tx.Exec(ctx, "LOCK TABLE audit_events IN EXCLUSIVE MODE"); err != nil {
			t.Fatal(err)
		}
		type result struct {
			id  string
			err error
		}
		results := make(chan result, len(queued)+1)
		start := func(it item) {
			ev := event(it.tenant, "GetCredential")
			ev.RequestID, ev.Subject = it.id, it.subject
			go func() { results <- result{it.id, g.Append(ctx, ev)} }()
		}
		start(first)
		waitFor(t, func() bool {
			var n int
			err := super.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
				WHERE datname = current_database() AND usename = $1 AND wait_event_type = 'Lock'`, db.Roles.App).Scan(&n)
			return err == nil && n == 1
		})
		same := 0
		for _, it := range queued {
			start(it)
			if it.tenant == first.tenant {
				same++
			}
		}
		waitFor(t, func() bool { return g.Queued(first.tenant) == same })
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		errs := map[string]error{}
		for range len(queued) + 1 {
			r := <-results
			errs[r.id] = r.err
		}
		rows, err := super.Query(ctx, `SELECT request_id, tenant_id::text, xmin::text FROM audit_events`)
		if err != nil {
			t.Fatal(err)
		}
		byID := map[string]row{}
		for rows.Next() {
			var id string
			var r row
			if err := rows.Scan(&id, &r.tenant, &r.xmin); err != nil {
				t.Fatal(err)
			}
			byID[id] = r
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return errs, byID
	}

	t.Run("one transaction per tenant", func(t *testing.T) {
		a, b := testenv.NewTenantID(), testenv.NewTenantID()
		var queued []item
		for i := range 9 {
			queued = append(queued, item{a, fmt.Sprintf("a-%d", i), good})
		}
		queued = append(queued, item{b, "b-0", good})
		errs, rows := held(t, item{a, "a-first", good}, queued)
		for id, err := range errs {
			if err != nil {
				t.Errorf("%s: %v", id, err)
			}
		}
		batch := rows["a-0"].xmin
		for i := range 9 {
			if r := rows[fmt.Sprintf("a-%d", i)]; r.tenant != a || r.xmin != batch {
				t.Errorf("a-%d: %+v, want tenant %s in transaction %s", i, r, a, batch)
			}
		}
		if r := rows["b-0"]; r.tenant != b || r.xmin == batch || r.xmin == rows["a-first"].xmin {
			t.Errorf("the other tenant's row %+v shares a transaction with tenant A's", r)
		}
	})
	t.Run("a refused row fails only its caller", func(t *testing.T) {
		a := testenv.NewTenantID()
		queued := []item{{a, "ok-0", good}, {a, "too-long", "user:" + strings.Repeat("x", 100)}, {a, "ok-1", good}}
		errs, rows := held(t, item{a, "ok-first", good}, queued)
		var pgErr *pgconn.PgError
		if !errors.As(errs["too-long"], &pgErr) || pgErr.Code != "23514" {
			t.Errorf("the oversized row: %v, want a check violation (23514)", errs["too-long"])
		}
		for _, id := range []string{"ok-first", "ok-0", "ok-1"} {
			if errs[id] != nil || rows[id].tenant != a {
				t.Errorf("%s: %v, row %+v", id, errs[id], rows[id])
			}
		}
		if _, ok := rows["too-long"]; ok {
			t.Error("the oversized row was stored")
		}
	})
}

// TestGroupUnwritable: with INSERT revoked from the app role, every caller gets the error.
func TestGroupUnwritable(t *testing.T) {
	db := newDB(t)
	g := audit.NewGroup(audit.NewStore(db.AppDB(t)), audit.GroupConfig{})
	ctx := context.Background()
	if _, err := db.OwnerPool(t).Exec(ctx, "REVOKE INSERT ON audit_events FROM "+db.Roles.App); err != nil {
		t.Fatal(err)
	}
	tenant := testenv.NewTenantID()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() { errs <- g.Append(ctx, event(tenant, "GetCredential")) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			t.Fatalf("append without INSERT: %v, want 42501", err)
		}
	}
}

// waitFor polls cond until it holds, failing the test after 20 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 20s")
		}
		<-tick.C
	}
}
