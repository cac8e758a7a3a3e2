package postgres_test

import (
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bulkhead/bulkhead/services/connection/internal/store"
)

// TestDueConnectionsAcrossTenants: the worker's platform read sees both tenants' connections
// (ids only, grouped by tenant) and only those due.
func TestDueConnectionsAcrossTenants(t *testing.T) {
	t.Parallel()
	st, _ := newStore(t)
	a, b := newCast(t, st), newCast(t, st)
	ctx := ctxT(t)

	none, err := st.DueConnections(ctx, store.DueQuery{Now: time.Now(), Margin: 5 * time.Minute, Idle: 24 * time.Hour})
	if err != nil || len(none) != 0 {
		t.Fatalf("due with fresh tokens: %v, %v", none, err)
	}
	// Two hours on, every token (one hour) is past the margin.
	due, err := st.DueConnections(ctx, store.DueQuery{Now: time.Now().Add(2 * time.Hour), Margin: 5 * time.Minute, Idle: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range due {
		if d.Work != store.DueRefresh || d.Idle {
			t.Fatalf("unexpected work %+v", d)
		}
		got = append(got, d.TenantID+"/"+d.ID+"/"+d.OwnerUserID)
	}
	var want []string
	for _, c := range []cast{a, b} {
		for _, conn := range []store.Connection{c.org, c.ofX, c.ofY} {
			want = append(want, c.tenant+"/"+conn.ID+"/"+conn.OwnerUserID)
		}
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("due:\n got  %v\n want %v", got, want)
	}
}

// TestPlatformReadOnly: the platform flag only widens SELECT. A platform transaction of the
// app role can neither change, lock, delete nor insert connections or outbox rows of any
// tenant — the policies of migrations 00003 and 00004 are SELECT-only.
func TestPlatformReadOnly(t *testing.T) {
	t.Parallel()
	st, db := newStore(t)
	a := newCast(t, st)
	ctx := ctxT(t)
	pdb := db.AppDB(t)

	for _, tc := range []struct{ name, sql string }{
		{"update connections", "UPDATE connections SET status = 'disabled'"},
		{"lock connections", "SELECT 1 FROM connections FOR UPDATE"},
		{"delete connections", "DELETE FROM connections"},
		{"update outbox", "UPDATE outbox SET published_at = now()"},
		{"delete outbox", "DELETE FROM outbox"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := pdb.InPlatformTx(ctx, func(tx pgx.Tx) error {
				tag, err := tx.Exec(ctx, tc.sql)
				if err == nil && tag.RowsAffected() != 0 {
					t.Errorf("%s touched %d rows", tc.sql, tag.RowsAffected())
				}
				return err
			})
			_ = err // refused outright or matching no row: both keep the rows as they were
		})
	}
	t.Run("insert", func(t *testing.T) {
		err := pdb.InPlatformTx(ctx, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO outbox (tenant_id, connection_id, event_type) VALUES ($1, $2, 'connection.created')`, a.tenant, a.org.ID)
			return err
		})
		if err == nil {
			t.Fatal("a platform transaction inserted an outbox row")
		}
	})
	// Everything is as it was.
	got, err := st.GetConnection(ctx, a.admin, a.org.ID)
	if err != nil || got.Status != store.StatusActive {
		t.Fatalf("org connection after the attempts: %+v, %v", got, err)
	}
	evs, err := st.Events(ctx, a.tenant, a.org.ID)
	if err != nil || len(evs) != 1 {
		t.Fatalf("outbox after the attempts: %v, %v", evs, err)
	}
}
