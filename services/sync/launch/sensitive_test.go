package launch_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	syncv1 "github.com/bulkhead/bulkhead/gen/bulkhead/sync/v1"
	brokerv1 "github.com/bulkhead/bulkhead/gen/bulkhead/vaultbroker/v1"
	"github.com/bulkhead/bulkhead/pkg/providertest"
	"github.com/bulkhead/bulkhead/services/identity/identitytest"
	"github.com/bulkhead/bulkhead/services/sync/internal/seal"
	"github.com/bulkhead/bulkhead/services/sync/launch"
	"github.com/bulkhead/bulkhead/services/vaultbroker/brokertest"
)

const sensitiveModel = "records_sensitive" // providertest records with sensitive_fields: [email]

// TestSensitiveFieldsSealed runs a model with a sensitive field against a real vault-broker
// (real identity and Vault): the field is stored as the tenant's transit ciphertext — a
// superuser reading the table sees no email — ListRecords and WatchChanges hand it back in
// clear, an unchanged record is still recognised (no update on a full resync) while a changed
// email is, and once the tenant is deprovisioned in Vault its records can no longer be opened
// (crypto-shredding).
func TestSensitiveFieldsSealed(t *testing.T) {
	id := identitytest.Start(t, identitytest.Options{Services: brokertest.Services})
	b := brokertest.Start(t, brokertest.Options{Identity: id})
	h := startOn(t, id, providertest.New(t, providertest.Options{API: providertest.APIOptions{MaxPageSize: 10}}),
		func(c *launch.Config) {
			c.BrokerAddr = b.GRPCAddr
			c.RecordHashKey = launch.Secret(strings.Repeat("h", 32))
		})
	a := id.CreateTenant(t, "alpha")
	b.Provision(t, a.ID)
	ctxA := as(t, id.Token(t, a.OwnerKey))
	connA, account := h.connect(t, a.ID)

	started, err := h.client.StartSync(ctxA, &syncv1.StartSyncRequest{TenantId: a.ID, ConnectionId: connA, Integration: "providertest", Model: sensitiveModel})
	if err != nil {
		t.Fatal(err)
	}
	syncID := started.GetSync().GetSyncId()
	h.waitFinished(t, syncID)
	want := map[string]string{} // id → email
	for _, r := range h.p.Records(account) {
		want[r.ID] = r.Fields["email"]
	}
	if len(want) != 25 {
		t.Fatalf("provider has %d records", len(want))
	}

	// At rest: no email in any stored payload, a sealed field with the tenant's ciphertext.
	stored := storedPayloads(t, h, a.ID, sensitiveModel)
	if len(stored) != len(want) {
		t.Fatalf("stored %d records, want %d", len(stored), len(want))
	}
	for ext, payload := range stored {
		if strings.Contains(payload, want[ext]) || strings.Contains(payload, "@") || strings.Contains(payload, `"email"`) {
			t.Fatalf("record %s is stored with its email in clear: %s", ext, payload)
		}
		var obj map[string]any
		if err := json.Unmarshal([]byte(payload), &obj); err != nil {
			t.Fatal(err)
		}
		if ct, _ := obj[seal.SealedField].(string); !strings.HasPrefix(ct, "vault:v") {
			t.Fatalf("record %s: sealed field = %v, want a transit ciphertext", ext, obj[seal.SealedField])
		}
	}

	// Read side: the email comes back in clear, in ListRecords and WatchChanges.
	recs := listModel(t, ctxA, h.client, a.ID, connA, sensitiveModel)
	checkEmails(t, recs, want)
	wctx, cancelWatch := context.WithCancel(ctxA)
	defer cancelWatch()
	stream, err := h.client.WatchChanges(wctx, &syncv1.WatchChangesRequest{TenantId: a.ID, ConnectionId: connA, Model: sensitiveModel})
	if err != nil {
		t.Fatal(err)
	}
	var watched []*syncv1.Record
	for len(watched) < len(want) {
		msg, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		watched = append(watched, msg.GetRecords()...)
	}
	cancelWatch()
	checkEmails(t, watched, want)

	// Change detection hashes the plaintext (keyed): a full resync of unchanged records updates
	// nothing although every seal is a fresh ciphertext; a changed email is one update.
	resync := func() *syncv1.Run {
		t.Helper()
		if _, err := h.client.TriggerSync(ctxA, &syncv1.TriggerSyncRequest{TenantId: a.ID, ConnectionId: connA, Model: sensitiveModel, FullResync: true}); err != nil {
			t.Fatal(err)
		}
		h.waitFinished(t, syncID)
		st, err := h.client.GetSyncStatus(ctxA, &syncv1.GetSyncStatusRequest{TenantId: a.ID, ConnectionId: connA, Model: sensitiveModel})
		if err != nil {
			t.Fatal(err)
		}
		return st.GetSync().GetLastRun()
	}
	if run := resync(); run.GetStatus() != syncv1.RunStatus_RUN_STATUS_SUCCEEDED || run.GetAdded() != 0 || run.GetUpdated() != 0 {
		t.Fatalf("resync of unchanged records = %v, want no change", run)
	}
	first := h.p.Records(account)[0]
	if _, err := h.p.PutRecord(account, first.ID, map[string]string{"name": first.Fields["name"], "email": "new@changed.example"}); err != nil {
		t.Fatal(err)
	}
	want[first.ID] = "new@changed.example"
	if run := resync(); run.GetUpdated() != 1 || run.GetAdded() != 0 {
		t.Fatalf("resync after an email change = %v, want one update", run)
	}
	checkEmails(t, listModel(t, ctxA, h.client, a.ID, connA, sensitiveModel), want)

	// Crypto-shredding: the tenant's key is destroyed; its stored records stay ciphertext that
	// nobody can open any more.
	pctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := b.Client(t, brokertest.ProvisioningService).DeprovisionTenant(pctx, &brokerv1.DeprovisionTenantRequest{TenantId: a.ID}); err != nil {
		t.Fatal(err)
	}
	_, err = h.client.ListRecords(ctxA, &syncv1.ListRecordsRequest{TenantId: a.ID, ConnectionId: connA, Model: sensitiveModel})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("ListRecords after deprovisioning = %v, want FAILED_PRECONDITION", err)
	}
	if n := len(storedPayloads(t, h, a.ID, sensitiveModel)); n != len(want) {
		t.Fatalf("stored %d records after shredding, want %d (sealed, unreadable)", n, len(want))
	}
}

// TestSensitiveModelWithoutBroker: without a broker a model with sensitive fields is never
// stored — its run is cancelled with the reason, and no record is written.
func TestSensitiveModelWithoutBroker(t *testing.T) {
	h := start(t)
	a := h.id.CreateTenant(t, "alpha")
	ctxA := as(t, h.id.Token(t, a.OwnerKey))
	connA, _ := h.connect(t, a.ID)
	if _, err := h.client.StartSync(ctxA, &syncv1.StartSyncRequest{TenantId: a.ID, ConnectionId: connA, Integration: "providertest", Model: sensitiveModel}); err != nil {
		t.Fatal(err)
	}
	for {
		st, err := h.client.GetSyncStatus(ctxA, &syncv1.GetSyncStatusRequest{TenantId: a.ID, ConnectionId: connA, Model: sensitiveModel})
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(st.GetSync().GetLastError(), "vault-broker") {
			break
		}
		select {
		case <-testCtx(t).Done():
			t.Fatalf("the run never failed for want of a broker: %v", st.GetSync())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if n := len(storedPayloads(t, h, a.ID, sensitiveModel)); n != 0 {
		t.Fatalf("%d records stored without a broker", n)
	}
}

// storedPayloads reads the stored payloads of tenantID's model as a superuser (bypassing
// row-level security, like someone with full access to the database), by external id.
func storedPayloads(t *testing.T, h *harness, tenantID, model string) map[string]string {
	t.Helper()
	conn, err := pgx.Connect(testCtx(t), h.db.SuperURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(testCtx(t), `SELECT external_id, payload::text FROM records WHERE tenant_id = $1 AND model = $2`, tenantID, model)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for rows.Next() {
		var ext, payload string
		if err := rows.Scan(&ext, &payload); err != nil {
			t.Fatal(err)
		}
		out[ext] = payload
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func listModel(t *testing.T, ctx context.Context, c syncv1.SyncServiceClient, tenant, conn, model string) []*syncv1.Record {
	t.Helper()
	var out []*syncv1.Record
	cursor := ""
	for {
		resp, err := c.ListRecords(ctx, &syncv1.ListRecordsRequest{TenantId: tenant, ConnectionId: conn, Model: model, Cursor: cursor, PageSize: 7})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, resp.GetRecords()...)
		cursor = resp.GetNextCursor()
		if !resp.GetHasMore() {
			return out
		}
	}
}

// checkEmails asserts recs are exactly want's records with their emails in clear.
func checkEmails(t *testing.T, recs []*syncv1.Record, want map[string]string) {
	t.Helper()
	if len(recs) != len(want) {
		t.Fatalf("got %d records, want %d", len(recs), len(want))
	}
	for _, r := range recs {
		var obj map[string]any
		if err := json.Unmarshal([]byte(r.GetPayloadJson()), &obj); err != nil {
			t.Fatal(err)
		}
		if obj["email"] != want[r.GetExternalId()] || obj["id"] != r.GetExternalId() {
			t.Fatalf("record %s = %s, want email %q", r.GetExternalId(), r.GetPayloadJson(), want[r.GetExternalId()])
		}
		if _, ok := obj[seal.SealedField]; ok {
			t.Fatalf("record %s is handed out sealed: %s", r.GetExternalId(), r.GetPayloadJson())
		}
	}
}
