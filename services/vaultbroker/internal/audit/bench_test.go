package audit_test

import (
	"context"
	"testing"

	"github.com/bulkhead/bulkhead/pkg/testenv"
	"github.com/bulkhead/bulkhead/services/vaultbroker/internal/audit"
	"github.com/bulkhead/bulkhead/services/vaultbroker/migrations"
)

// BenchmarkAppend is the cost one audited call adds on the request path: one pipelined round
// trip (tenant scope + INSERT, committed) as the app role under forced RLS, with the table's
// CHECK constraints and triggers. Serial, like the audit write of one request.
func BenchmarkAppend(b *testing.B) {
	db := testenv.NewDatabase(b, testenv.DBSpec{Name: "vaultbroker", Migrations: migrations.FS})
	st := audit.NewStore(db.AppDB(b))
	ev := event(testenv.NewTenantID(), "GetCredential")
	ctx := context.Background()
	for b.Loop() {
		if err := st.Append(ctx, ev); err != nil {
			b.Fatal(err)
		}
	}
}
