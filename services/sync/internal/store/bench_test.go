package store_test

import (
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bulkhead/bulkhead/pkg/testenv"
	"github.com/bulkhead/bulkhead/services/sync/internal/store"
)

// BenchmarkIngest measures ingest throughput — pages of new records through ApplyPage as the
// app role, under forced RLS, with change detection, the feed lock and the run's position
// committed per page — against a raw COPY of the same rows into a plain table (no RLS, no
// indexes) in the same run, and reports the ratio (goal ≥ 0.5).
func BenchmarkIngest(b *testing.B) {
	const total, pageSize = 5000, 1000
	db, tdb := newDB(b)
	owner := db.OwnerPool(b)
	if _, err := owner.Exec(ctx(b), `CREATE TABLE plain_records (LIKE records)`); err != nil {
		b.Fatal(err)
	}
	tenant := testenv.NewTenant()
	recs := make([]store.PageRecord, total)
	for i := range recs {
		recs[i] = store.PageRecord{
			ExternalID: fmt.Sprintf("rec-%06d", i),
			Payload: fmt.Appendf(nil, `{"email":"person%d@example.com","id":"rec-%06d","name":"Person %d","phone":"+1 555 %07d","updated_at":"2025-01-01T00:00:00.000Z"}`,
				i, i, i, i),
			UpdatedAt: time.Date(2025, 1, 1, 0, 0, i, 0, time.UTC),
		}
	}
	var ingest, copyDur time.Duration
	for b.Loop() {
		f := newSync(b, tdb, tenant, store.ModeFull)
		run := f.begin(b)
		start := time.Now()
		for p := 0; p < total; p += pageSize {
			next := "more"
			if p+pageSize >= total {
				next = ""
			}
			if _, err := f.apply(b, run, next, recs[p:p+pageSize]...); err != nil {
				b.Fatal(err)
			}
		}
		ingest += time.Since(start)

		conn := uuid.New()
		rows := make([][]any, total)
		for i, r := range recs {
			sum := sha256.Sum256(r.Payload)
			rows[i] = []any{tenant.TenantID, conn, "records", r.ExternalID, sum[:], string(r.Payload), r.UpdatedAt, "added", int64(i), time.Now(), run, time.Now()}
		}
		start = time.Now()
		n, err := owner.CopyFrom(ctx(b), pgx.Identifier{"plain_records"},
			[]string{"tenant_id", "connection_id", "model", "external_id", "content_hash", "payload", "provider_updated_at", "action", "seq", "changed_at", "last_seen_run", "first_seen_at"},
			pgx.CopyFromRows(rows))
		if err != nil || n != total {
			b.Fatalf("copy = %d, %v", n, err)
		}
		copyDur += time.Since(start)
	}
	ingestRate := float64(b.N*total) / ingest.Seconds()
	copyRate := float64(b.N*total) / copyDur.Seconds()
	b.ReportMetric(ingestRate, "ingest_records/s")
	b.ReportMetric(copyRate, "copy_records/s")
	b.ReportMetric(ingestRate/copyRate, "ingest/copy")
}
