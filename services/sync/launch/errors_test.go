package launch_test

import (
	"testing"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	syncv1 "github.com/bulkhead/bulkhead/gen/bulkhead/sync/v1"
	"github.com/bulkhead/bulkhead/services/identity/identitytest"
	"github.com/bulkhead/bulkhead/services/sync/launch"
)

// TestErrorCodes: what each refusal answers, by code (never by message).
func TestErrorCodes(t *testing.T) {
	h := start(t)
	a := h.id.CreateTenant(t, "alpha")
	owner := as(t, h.id.Token(t, a.OwnerKey))
	connA, _ := h.connect(t, a.ID)
	started, err := h.client.StartSync(owner, &syncv1.StartSyncRequest{TenantId: a.ID, ConnectionId: connA, Integration: "providertest", Model: "records"})
	if err != nil {
		t.Fatal(err)
	}
	h.waitFinished(t, started.GetSync().GetSyncId())

	// A member may read syncs and records but not manage syncs.
	added, err := identityv1.NewMemberServiceClient(h.id.Conn(t)).AddMember(identitytest.WithToken(testCtx(t), h.id.Token(t, a.OwnerKey)),
		&identityv1.AddMemberRequest{TenantId: a.ID, Email: "member@alpha.example.com", Role: identityv1.Role_ROLE_MEMBER})
	if err != nil {
		t.Fatal(err)
	}
	member := as(t, h.id.UserToken(t, a.ID, added.GetMember().GetUserId(), launch.Audience))

	tests := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"unknown model", func() error {
			_, err := h.client.StartSync(owner, &syncv1.StartSyncRequest{TenantId: a.ID, ConnectionId: connA, Integration: "providertest", Model: "nope"})
			return err
		}, codes.InvalidArgument},
		{"incremental without a filter", func() error {
			_, err := h.client.StartSync(owner, &syncv1.StartSyncRequest{TenantId: a.ID, ConnectionId: uuid.NewString(), Integration: "hubspot", Model: "contacts", Mode: syncv1.SyncMode_SYNC_MODE_INCREMENTAL})
			return err
		}, codes.InvalidArgument},
		{"another integration for an existing sync", func() error {
			_, err := h.client.StartSync(owner, &syncv1.StartSyncRequest{TenantId: a.ID, ConnectionId: connA, Integration: "github", Model: "records"})
			return err
		}, codes.InvalidArgument},
		{"frequency below 30s", func() error {
			_, err := h.client.StartSync(owner, &syncv1.StartSyncRequest{TenantId: a.ID, ConnectionId: connA, Integration: "providertest", Model: "records", Frequency: durationpb.New(1e9)})
			return err
		}, codes.InvalidArgument},
		{"not a uuid", func() error {
			_, err := h.client.GetSyncStatus(owner, &syncv1.GetSyncStatusRequest{TenantId: a.ID, ConnectionId: "x", Model: "records"})
			return err
		}, codes.InvalidArgument},
		{"forged cursor", func() error {
			_, err := h.client.ListRecords(owner, &syncv1.ListRecordsRequest{TenantId: a.ID, ConnectionId: connA, Model: "records", Cursor: "djEuOTk5OTk5OTk5OTk5OTk5OTk5OTk5"})
			return err
		}, codes.InvalidArgument},
		{"forged page token", func() error {
			_, err := h.client.ListSyncs(owner, &syncv1.ListSyncsRequest{TenantId: a.ID, PageToken: "bm9wZQ"})
			return err
		}, codes.InvalidArgument},
		{"model without connection", func() error {
			s, err := h.client.WatchChanges(owner, &syncv1.WatchChangesRequest{TenantId: a.ID, Model: "records"})
			if err == nil {
				_, err = s.Recv()
			}
			return err
		}, codes.InvalidArgument},
		{"no such sync", func() error {
			_, err := h.client.TriggerSync(owner, &syncv1.TriggerSyncRequest{TenantId: a.ID, ConnectionId: uuid.NewString(), Model: "records"})
			return err
		}, codes.NotFound},
		{"member manages", func() error {
			_, err := h.client.TriggerSync(member, &syncv1.TriggerSyncRequest{TenantId: a.ID, ConnectionId: connA, Model: "records"})
			return err
		}, codes.PermissionDenied},
		{"member reads records", func() error {
			_, err := h.client.ListRecords(member, &syncv1.ListRecordsRequest{TenantId: a.ID, ConnectionId: connA, Model: "records"})
			return err
		}, codes.OK},
		{"member manages webhooks", func() error {
			_, err := syncv1.NewWebhookServiceClient(h.conn).ListWebhookEndpoints(member, &syncv1.ListWebhookEndpointsRequest{TenantId: a.ID})
			return err
		}, codes.PermissionDenied},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := status.Code(tc.call()); got != tc.want {
				t.Fatalf("code = %s, want %s", got, tc.want)
			}
		})
	}

	// A paused sync refuses TriggerSync.
	if _, err := h.client.PauseSync(owner, &syncv1.PauseSyncRequest{TenantId: a.ID, ConnectionId: connA, Model: "records"}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.client.TriggerSync(owner, &syncv1.TriggerSyncRequest{TenantId: a.ID, ConnectionId: connA, Model: "records"}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("TriggerSync on a paused sync = %v", err)
	}
}

func TestListSyncsPages(t *testing.T) {
	h := start(t)
	a := h.id.CreateTenant(t, "alpha")
	owner := as(t, h.id.Token(t, a.OwnerKey))
	want := map[string]bool{}
	for range 2 {
		conn, _ := h.connect(t, a.ID)
		for _, model := range []string{"records", "records_linked"} {
			s, err := h.client.StartSync(owner, &syncv1.StartSyncRequest{TenantId: a.ID, ConnectionId: conn, Integration: "providertest", Model: model})
			if err != nil {
				t.Fatal(err)
			}
			want[s.GetSync().GetSyncId()] = true
		}
	}
	got := map[string]bool{}
	token := ""
	for pages := 0; ; pages++ {
		resp, err := h.client.ListSyncs(owner, &syncv1.ListSyncsRequest{TenantId: a.ID, PageSize: 3, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range resp.GetSyncs() {
			if got[s.GetSyncId()] {
				t.Fatalf("sync %s listed twice", s.GetSyncId())
			}
			got[s.GetSyncId()] = true
		}
		if token = resp.GetNextPageToken(); token == "" {
			if pages != 1 {
				t.Fatalf("%d pages, want 2", pages+1)
			}
			break
		}
	}
	if len(got) != len(want) {
		t.Fatalf("listed %d syncs, want %d", len(got), len(want))
	}
}
