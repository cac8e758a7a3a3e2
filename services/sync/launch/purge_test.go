package launch_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	syncv1 "github.com/bulkhead/bulkhead/gen/bulkhead/sync/v1"
	"github.com/bulkhead/bulkhead/services/sync/internal/engine"
	"github.com/bulkhead/bulkhead/services/sync/internal/purge"
	"github.com/bulkhead/bulkhead/services/sync/internal/webhook"
	"github.com/bulkhead/bulkhead/services/sync/launch"
)

// tenantCounts counts tenantID's rows in every table that has a tenant_id column, found in the
// catalog (so a table added later without a purge step fails the test), and its River jobs
// (river_job has no tenant column: jobs name the tenant in their arguments).
func tenantCounts(t *testing.T, super *pgxpool.Pool, tenantID string) map[string]int64 {
	t.Helper()
	ctx := testCtx(t)
	rows, err := super.Query(ctx, `SELECT c.table_schema, c.table_name FROM information_schema.columns c
		JOIN information_schema.tables tb ON tb.table_schema = c.table_schema AND tb.table_name = c.table_name
		WHERE c.column_name = 'tenant_id' AND tb.table_type = 'BASE TABLE'
		  AND c.table_schema NOT IN ('pg_catalog', 'information_schema')
		ORDER BY 1, 2`)
	if err != nil {
		t.Fatal(err)
	}
	type table struct{ Schema, Name string }
	tables, err := pgx.CollectRows(rows, pgx.RowToStructByPos[table])
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, tb := range tables {
		var n int64
		q := fmt.Sprintf("SELECT count(*) FROM %s WHERE tenant_id = $1", pgx.Identifier{tb.Schema, tb.Name}.Sanitize())
		if err := super.QueryRow(ctx, q, tenantID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		out[tb.Name] = n
	}
	var jobs int64
	if err := super.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE args @> jsonb_build_object('tenant_id', $1::text)`,
		tenantID).Scan(&jobs); err != nil {
		t.Fatal(err)
	}
	out["river_job"] = jobs
	// The enumeration must see the tables the service is known to have, or it proves nothing.
	for _, want := range []string{"syncs", "records", "webhook_endpoints", "webhook_deliveries"} {
		if _, ok := out[want]; !ok {
			t.Fatalf("table %s not found among tenant tables %v", want, out)
		}
	}
	return out
}

// seedWebhooks gives tenantID an endpoint with deliveries in every state (dead letters
// included) and a delivery job scheduled for later, as the outbox would hold them.
func seedWebhooks(t *testing.T, h *harness, super *pgxpool.Pool, tenantID string, deliveries int) {
	t.Helper()
	ctx := testCtx(t)
	var endpointID string
	err := super.QueryRow(ctx, `INSERT INTO webhook_endpoints (tenant_id, url, events, secret)
		VALUES ($1, 'https://receiver.example.com/hook', ARRAY['sync.completed'], sha256('k'::bytea)) RETURNING id::text`,
		tenantID).Scan(&endpointID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := super.Exec(ctx, `INSERT INTO webhook_deliveries (tenant_id, endpoint_id, event_id, event, body, state)
		SELECT $1, $2, gen_random_uuid(), 'sync.completed', '{}'::jsonb,
			(ARRAY['pending', 'delivered', 'dead_letter'])[1 + g % 3]
		FROM generate_series(1, $3) g`, tenantID, endpointID, deliveries); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Engine.River().Insert(ctx, webhook.DeliverArgs{TenantID: tenantID, DeliveryID: uuid.NewString()},
		&river.InsertOpts{ScheduledAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
}

func wantReason(t *testing.T, err error, code codes.Code, reason string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != code {
		t.Fatalf("error = %v, want %v", err, code)
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() == reason {
			return
		}
	}
	t.Fatalf("error %v has no ErrorInfo reason %s", err, reason)
}

// TestPurgeTenant: identity's saga purges a DELETING tenant — its syncs, River jobs (a running
// run cancelled, scheduled ones deleted), records, webhook endpoints and deliveries — in
// bounded batches until done, and nothing of another tenant; only identity acting as itself may
// ask, and only for a tenant identity reports DELETING.
func TestPurgeTenant(t *testing.T) {
	// Once holdTenant is set, that tenant's runs are held after each committed page until
	// their job is cancelled: a run in progress when the purge comes.
	held := make(chan struct{}, 1)
	var holdTenant atomic.Pointer[string]
	hold := func(o *launch.Options) {
		prev := o.Engine
		o.Engine = func(c *engine.Config) {
			prev(c)
			c.Hooks.PageCommitted = func(ctx context.Context, tenantID, _ string, _, _ int64) {
				if p := holdTenant.Load(); p == nil || *p != tenantID {
					return
				}
				select {
				case held <- struct{}{}:
				default:
				}
				<-ctx.Done()
			}
		}
	}
	h := start(t, hold)
	super := h.db.SuperPool(t)
	a, b := h.id.CreateTenant(t, "alpha"), h.id.CreateTenant(t, "bravo")
	tokA, tokB := h.id.Token(t, a.OwnerKey), h.id.Token(t, b.OwnerKey)
	for _, tn := range []struct{ id, tok string }{{a.ID, tokA}, {b.ID, tokB}} {
		conn, _ := h.connect(t, tn.id)
		started, err := h.client.StartSync(as(t, tn.tok), &syncv1.StartSyncRequest{TenantId: tn.id, ConnectionId: conn, Integration: "providertest", Model: "records"})
		if err != nil {
			t.Fatal(err)
		}
		h.waitFinished(t, started.GetSync().GetSyncId())
		seedWebhooks(t, h, super, tn.id, 30)
	}
	// More of A's records than one batch takes.
	if _, err := super.Exec(testCtx(t), `INSERT INTO records (tenant_id, connection_id, model, external_id, content_hash, payload, action, seq, last_seen_run)
		SELECT $1, gen_random_uuid(), 'records', 'seed-' || g, sha256(g::text::bytea), '{}'::jsonb, 'added', nextval('record_seq'), 1
		FROM generate_series(1, $2) g`, a.ID, purge.DefaultBatch+1000); err != nil {
		t.Fatal(err)
	}
	// A's second sync is running (between two pages) when the tenant is deleted. A's first
	// sync has finished and its next run is an hour away, so only this run is held.
	holdTenant.Store(&a.ID)
	connA2, _ := h.connect(t, a.ID)
	if _, err := h.client.StartSync(as(t, tokA), &syncv1.StartSyncRequest{TenantId: a.ID, ConnectionId: connA2, Integration: "providertest", Model: "records"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-held:
	case <-testCtx(t).Done():
		t.Fatal("A's second run never committed a page")
	}

	beforeA, beforeB := tenantCounts(t, super, a.ID), tenantCounts(t, super, b.ID)
	if beforeA["records"] <= int64(purge.DefaultBatch) || beforeA["syncs"] != 2 || beforeA["webhook_deliveries"] != 30 || beforeA["river_job"] < 3 {
		t.Fatalf("A's seeded rows = %v", beforeA)
	}

	purgeAs := func(token, tenant string) (*syncv1.PurgeTenantResponse, error) {
		ctx := testCtx(t)
		if token != "" {
			ctx = as(t, token)
		}
		return syncv1.NewTenantDataServiceClient(h.conn).PurgeTenant(ctx, &syncv1.PurgeTenantRequest{TenantId: tenant})
	}
	identityTok := h.id.ServiceToken(t, "identity", launch.Audience)

	// An ACTIVE tenant, or one identity does not know, is refused: nothing is deleted.
	_, err := purgeAs(identityTok, a.ID)
	wantReason(t, err, codes.FailedPrecondition, "TENANT_NOT_DELETING")
	_, err = purgeAs(identityTok, uuid.NewString())
	wantReason(t, err, codes.FailedPrecondition, "TENANT_NOT_DELETING")

	if _, err := identityv1.NewTenantServiceClient(h.id.Conn(t)).DeleteTenant(as(t, tokA), &identityv1.DeleteTenantRequest{TenantId: a.ID}); err != nil {
		t.Fatal(err)
	}
	_, err = purgeAs(identityTok, b.ID)
	wantReason(t, err, codes.FailedPrecondition, "TENANT_NOT_DELETING")

	// Nobody but identity, acting as itself, may purge, even a DELETING tenant.
	accounts := identityv1.NewServiceAccountServiceClient(h.id.Conn(t))
	sa, err := accounts.CreateServiceAccount(as(t, tokB), &identityv1.CreateServiceAccountRequest{TenantId: b.ID, Name: "bot", Scopes: []string{"syncs.manage", "records.read"}})
	if err != nil {
		t.Fatal(err)
	}
	saKey, err := accounts.CreateApiKey(as(t, tokB), &identityv1.CreateApiKeyRequest{TenantId: b.ID, Owner: &identityv1.CreateApiKeyRequest_ServiceAccountId{ServiceAccountId: sa.GetServiceAccount().GetServiceAccountId()}})
	if err != nil {
		t.Fatal(err)
	}
	refused := []struct {
		name  string
		token string
		code  codes.Code
	}{
		{"another tenant's owner", tokB, codes.PermissionDenied},
		{"a tenant service account", h.id.Token(t, saKey.GetSecret()), codes.PermissionDenied},
		{"svc:sync itself", h.id.ServiceToken(t, "sync", launch.Audience), codes.PermissionDenied},
		{"svc:connection, which holds tenants.offboard", h.id.ServiceToken(t, "connection", launch.Audience), codes.PermissionDenied},
		{"no token", "", codes.Unauthenticated},
	}
	for _, tc := range refused {
		t.Run("refused/"+tc.name, func(t *testing.T) {
			if _, err := purgeAs(tc.token, a.ID); status.Code(err) != tc.code {
				t.Fatalf("PurgeTenant = %v, want %v", err, tc.code)
			}
		})
	}
	if got := tenantCounts(t, super, a.ID); got["records"] != beforeA["records"] || got["syncs"] != 2 {
		t.Fatalf("A's rows after refused calls = %v, want %v", got, beforeA)
	}

	// Identity's saga: call until done. The first call cannot finish (more records than a
	// batch, and the running job is only asked to stop).
	first, err := purgeAs(identityTok, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if first.GetDone() || first.GetDeleted() < int64(purge.DefaultBatch) {
		t.Fatalf("first call = %v, want a full batch and not done", first)
	}
	total := first.GetDeleted()
	for calls := 1; ; calls++ {
		resp, err := purgeAs(identityTok, a.ID)
		if err != nil {
			t.Fatal(err)
		}
		total += resp.GetDeleted()
		if resp.GetDone() {
			break
		}
		if calls > 200 {
			t.Fatalf("not done after %d calls: %v", calls, tenantCounts(t, super, a.ID))
		}
		// The held run's job is finalized by River once its worker returns; wait for that
		// signal (the job leaving the running state) rather than spinning.
		waitNoRunningJob(t, h, a.ID)
	}
	for table, n := range tenantCounts(t, super, a.ID) {
		if n != 0 {
			t.Errorf("%s still holds %d rows of the purged tenant", table, n)
		}
	}
	if total < beforeA["records"]+beforeA["syncs"]+beforeA["webhook_deliveries"]+beforeA["webhook_endpoints"] {
		t.Errorf("deleted %d rows in all, fewer than the tenant had (%v)", total, beforeA)
	}
	if afterB := tenantCounts(t, super, b.ID); fmt.Sprint(afterB) != fmt.Sprint(beforeB) {
		t.Errorf("B's rows changed: %v, want %v", afterB, beforeB)
	}
	// Idempotent: again and again, nothing to delete, done.
	for range 2 {
		resp, err := purgeAs(identityTok, a.ID)
		if err != nil || !resp.GetDone() || resp.GetDeleted() != 0 {
			t.Fatalf("repeated PurgeTenant = %v, %v; want done with 0 deleted", resp, err)
		}
	}
}

// waitNoRunningJob waits until no job of tenantID is running, on River's job events.
func waitNoRunningJob(t *testing.T, h *harness, tenantID string) {
	t.Helper()
	events, cancel := h.svc.Engine.River().Subscribe(river.EventKindJobCancelled, river.EventKindJobCompleted,
		river.EventKindJobFailed, river.EventKindJobSnoozed)
	defer cancel()
	for {
		var n int
		err := h.db.SuperPool(t).QueryRow(testCtx(t), `SELECT count(*) FROM river_job
			WHERE state = 'running' AND args @> jsonb_build_object('tenant_id', $1::text)`, tenantID).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		select {
		case <-events:
		case <-testCtx(t).Done():
			t.Fatalf("a job of tenant %s is still running", tenantID)
		}
	}
}

// TestPurgeTenantIdentityDown: without identity's answer nothing is purged, and the saga is
// told to retry.
func TestPurgeTenantIdentityDown(t *testing.T) {
	h := start(t)
	a := h.id.CreateTenant(t, "alpha")
	identityTok := h.id.ServiceToken(t, "identity", launch.Audience)
	if err := h.id.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := syncv1.NewTenantDataServiceClient(h.conn).PurgeTenant(as(t, identityTok), &syncv1.PurgeTenantRequest{TenantId: a.ID})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("PurgeTenant with identity down = %v, want UNAVAILABLE", err)
	}
}
