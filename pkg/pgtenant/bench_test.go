package pgtenant_test

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/pkg/testenv"
)

// BenchmarkPointRead compares what tenancy costs on a point read by id (10,000 notes over 100
// tenants), each variant timed call by call in the same loop so machine noise hits them alike:
//   - plain: `WHERE tenant_id = $1 AND id = $2` on a copy of the table without RLS (the floor);
//   - query: pgtenant.QueryOne — set_config and the query in one pipelined batch;
//   - intx: DB.InTx — BEGIN+set_config in one message, then the query, then COMMIT;
//   - split: BEGIN, set_config, query, COMMIT as separate round trips (what pgtenant avoids).
//
// The ratios to plain are reported as metrics (query/plain, intx/plain, split/plain).
func BenchmarkPointRead(b *testing.B) {
	ctx := context.Background()
	db := testenv.NewDatabase(b, spec)
	super := db.SuperPool(b)
	setup := []string{
		`INSERT INTO notes (tenant_id, id, body)
		 SELECT t.id, gen_random_uuid(), 'note ' || n
		 FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, 100)) t, generate_series(1, 100) n`,
		// The superuser owns the copy, so no policy applies; the app role only reads it.
		`CREATE TABLE notes_plain AS SELECT * FROM notes`,
		`ALTER TABLE notes_plain ADD UNIQUE (tenant_id, id)`,
		`GRANT SELECT ON notes_plain TO ` + db.Roles.App,
		`ANALYZE notes, notes_plain`,
	}
	for _, stmt := range setup {
		if _, err := super.Exec(ctx, stmt); err != nil {
			b.Fatal(err)
		}
	}
	type key struct{ Tenant, ID string }
	rows, _ := super.Query(ctx, "SELECT tenant_id::text, id::text FROM notes")
	keys, err := pgx.CollectRows(rows, pgx.RowToStructByPos[key])
	if err != nil || len(keys) != 10_000 {
		b.Fatalf("keys: %d, %v", len(keys), err)
	}

	pool := db.AppPool(b)
	app := pgtenant.New(pool)
	variants := []struct {
		name string
		read func(k key) (string, error)
	}{
		{"plain", func(k key) (body string, err error) {
			err = pool.QueryRow(ctx, "SELECT body FROM notes_plain WHERE tenant_id = $1 AND id = $2", k.Tenant, k.ID).Scan(&body)
			return body, err
		}},
		{"query", func(k key) (string, error) {
			return pgtenant.QueryOne(ctx, app, pgtenant.Scope{TenantID: k.Tenant}, "SELECT body FROM notes WHERE id = $1", []any{k.ID}, pgx.RowTo[string])
		}},
		{"intx", func(k key) (body string, err error) {
			err = app.InTx(ctx, pgtenant.Scope{TenantID: k.Tenant}, func(tx pgx.Tx) error {
				return tx.QueryRow(ctx, "SELECT body FROM notes WHERE id = $1", k.ID).Scan(&body)
			})
			return body, err
		}},
		{"split", func(k key) (body string, err error) {
			err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, "SELECT set_config('app.tenant_id', $1, true)", k.Tenant); err != nil {
					return err
				}
				return tx.QueryRow(ctx, "SELECT body FROM notes WHERE id = $1", k.ID).Scan(&body)
			})
			return body, err
		}},
	}
	// Warm the statement caches so the loop measures steady state.
	for _, v := range variants {
		if _, err := v.read(keys[0]); err != nil {
			b.Fatalf("%s: %v", v.name, err)
		}
	}
	spent := make([]time.Duration, len(variants))
	rng := rand.New(rand.NewPCG(1, 2))
	b.ResetTimer()
	for b.Loop() {
		k := keys[rng.IntN(len(keys))]
		for i, v := range variants {
			start := time.Now()
			if _, err := v.read(k); err != nil {
				b.Fatalf("%s: %v", v.name, err)
			}
			spent[i] += time.Since(start)
		}
	}
	b.StopTimer()
	for i, v := range variants {
		b.ReportMetric(spent[i].Seconds()*1e6/float64(b.N), v.name+"-µs/op")
		if i > 0 {
			b.ReportMetric(float64(spent[i])/float64(spent[0]), v.name+"/plain")
		}
	}
}
