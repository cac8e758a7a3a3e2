package postgres

import (
	"context"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/pkg/testenv"
	"github.com/bulkhead/bulkhead/services/connection/internal/store"
	"github.com/bulkhead/bulkhead/services/connection/migrations"
)

// BenchmarkListConnections compares ListConnections as the service runs it — app role, forced
// RLS with the user axis, tenant and user set in the same pipelined batch — with the same
// query, same columns and same data run by a role without RLS on a copy of the table with an
// explicit `WHERE tenant_id = … AND (scope = 'org' OR owner_user_id = …)`. 20,000 connections
// over 200 tenants (a tenth of them user-level), pages of 50; each variant timed call by call
// in the same loop. Reported: the ratio rls/plain (goal ≤ 1.1), scoped/plain (the plain query
// sent with the scope, as pgtenant sends it: what setting the tenant costs without any
// policy), rls/scoped (what the policies alone cost) and the median µs per call; ratios are
// of medians.
func BenchmarkListConnections(b *testing.B) {
	ctx := context.Background()
	db := testenv.NewDatabase(b, testenv.DBSpec{Name: "connection", Migrations: migrations.FS})
	super := db.SuperPool(b)
	setup := []string{
		`INSERT INTO connections (tenant_id, id, integration, auth_type, scope, owner_user_id, creator, credential_version, created_at)
		 SELECT t.id, gen_random_uuid(), 'github', 'oauth2',
		        CASE WHEN n % 10 = 0 THEN 'user' ELSE 'org' END,
		        CASE WHEN n % 10 = 0 THEN t.owner END,
		        'user:bench', 1, now() - n * interval '1 second'
		 FROM (SELECT gen_random_uuid() AS id, gen_random_uuid() AS owner FROM generate_series(1, 200)) t,
		      generate_series(1, 100) n`,
		`CREATE TABLE connections_plain AS SELECT * FROM connections`,
		`CREATE INDEX ON connections_plain (tenant_id, created_at DESC, id DESC)`,
		`GRANT SELECT ON connections_plain TO ` + db.Roles.App,
		`ANALYZE connections, connections_plain`,
	}
	for _, stmt := range setup {
		if _, err := super.Exec(ctx, stmt); err != nil {
			b.Fatal(err)
		}
	}
	type actor struct{ Tenant, User string }
	rows, _ := super.Query(ctx, `SELECT DISTINCT tenant_id::text, coalesce((SELECT owner_user_id::text FROM connections u
		WHERE u.tenant_id = c.tenant_id AND owner_user_id IS NOT NULL LIMIT 1), '') FROM connections c`)
	actors, err := pgx.CollectRows(rows, pgx.RowToStructByPos[actor])
	if err != nil || len(actors) != 200 {
		b.Fatalf("actors: %d, %v", len(actors), err)
	}

	st := New(db.AppDB(b))
	pool := db.AppPool(b)
	plainSQL := strings.Replace(listConnectionsSQL, "FROM connections c", "FROM connections_plain c", 1)
	plainSQL = strings.Replace(plainSQL, "ORDER BY", "AND (c.scope = 'org' OR c.owner_user_id = $8::uuid)\n\t\tORDER BY", 1)
	variants := []struct {
		name string
		list func(a actor) (int, error)
	}{
		{"plain", func(a actor) (int, error) {
			rows, err := pool.Query(ctx, plainSQL, a.Tenant, nil, nil, nil, nil, nil, 51, a.User)
			if err != nil {
				return 0, err
			}
			cs, err := pgx.CollectRows(rows, scanConnection)
			return min(len(cs), 50), err // the store trims the look-ahead row too
		}},
		// The plain query sent the way pgtenant sends every query (scope and statement in one
		// pipelined batch): separates what setting the tenant costs from what the policies cost.
		{"scoped", func(a actor) (int, error) {
			cs, err := pgtenant.Query(ctx, st.db, pgtenant.Scope{TenantID: a.Tenant, UserID: a.User}, plainSQL,
				[]any{a.Tenant, nil, nil, nil, nil, nil, 51, a.User}, scanConnection)
			return min(len(cs), 50), err
		}},
		{"rls", func(a actor) (int, error) {
			cs, _, err := st.ListConnections(ctx, store.Actor{TenantID: a.Tenant, UserID: a.User}, store.Filter{}, store.Page{Size: 50})
			return len(cs), err
		}},
	}
	for _, v := range variants { // warm statement caches; both see the same rows
		n, err := v.list(actors[0])
		if err != nil || n != 50 {
			b.Fatalf("%s: %d rows, %v", v.name, n, err)
		}
	}
	// Each iteration times every variant once, in a shuffled order, so neither machine noise
	// nor a position in the loop (the first call after another's network flight) favours one.
	// The ratios use medians of the per-call times: one scheduler hiccup or GC pause in a
	// variant's call moves a sum but not a median.
	times := make([][]time.Duration, len(variants))
	order := make([]int, len(variants))
	for i := range order {
		order[i] = i
	}
	rng := rand.New(rand.NewPCG(1, 2))
	b.ResetTimer()
	for b.Loop() {
		a := actors[rng.IntN(len(actors))]
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, i := range order {
			start := time.Now()
			if _, err := variants[i].list(a); err != nil {
				b.Fatalf("%s: %v", variants[i].name, err)
			}
			times[i] = append(times[i], time.Since(start))
		}
	}
	b.StopTimer()
	med := make([]float64, len(variants))
	for i, v := range variants {
		med[i] = median(times[i])
		b.ReportMetric(med[i]/1e3, v.name+"-µs/op")
	}
	b.ReportMetric(med[1]/med[0], "scoped/plain")
	b.ReportMetric(med[2]/med[0], "rls/plain")
	b.ReportMetric(med[2]/med[1], "rls/scoped") // what the policies alone cost
}

// median returns the median of ds in nanoseconds; ds is reordered.
func median(ds []time.Duration) float64 {
	slices.Sort(ds)
	n := len(ds)
	if n%2 == 1 {
		return float64(ds[n/2])
	}
	return float64(ds[n/2-1]+ds[n/2]) / 2
}
