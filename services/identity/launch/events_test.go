package launch_test

import (
	"testing"

	"google.golang.org/grpc/codes"

	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	"github.com/bulkhead/bulkhead/services/identity/identitytest"
)

// listAll pages ListEvents from after until a page comes back empty.
func listAll(t *testing.T, ev identityv1.EventServiceClient, token, after string, types ...string) ([]*identityv1.Event, string) {
	t.Helper()
	var out []*identityv1.Event
	for {
		resp, err := ev.ListEvents(as(t, token), &identityv1.ListEventsRequest{AfterCursor: after, PageSize: 2, Types: types})
		if err != nil {
			t.Fatalf("ListEvents: %v", err)
		}
		if len(resp.GetEvents()) == 0 {
			if resp.GetNextCursor() != after {
				t.Fatalf("empty page moved the cursor from %q to %q", after, resp.GetNextCursor())
			}
			return out, after
		}
		out = append(out, resp.GetEvents()...)
		after = resp.GetNextCursor()
	}
}

// TestListEvents: a Bulkhead service with events.read pages through every tenant's outbox in
// order with its cursor; types filter; nobody else may read it.
func TestListEvents(t *testing.T) {
	id := identitytest.Start(t, identitytest.Options{})
	c := newClients(t, id)
	ev := identityv1.NewEventServiceClient(id.Conn(t))
	a, b := id.CreateTenant(t, "a"), id.CreateTenant(t, "b")
	aOwner := as(t, id.Token(t, a.OwnerKey))
	m, err := c.members.AddMember(aOwner, &identityv1.AddMemberRequest{TenantId: a.ID, Email: "x@a.example", Role: identityv1.Role_ROLE_MEMBER})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.members.RemoveMember(aOwner, &identityv1.RemoveMemberRequest{TenantId: a.ID, UserId: m.GetMember().GetUserId()}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.tenants.DeleteTenant(as(t, id.Token(t, b.OwnerKey)), &identityv1.DeleteTenantRequest{TenantId: b.ID}); err != nil {
		t.Fatal(err)
	}
	svc := id.ServiceToken(t, "connection")

	all, end := listAll(t, ev, svc, "")
	var got []string
	for _, e := range all {
		got = append(got, e.GetType()+"@"+e.GetTenantId())
	}
	want := []string{"tenant.created@" + a.ID, "tenant.created@" + b.ID, "member.removed@" + a.ID, "tenant.deleting@" + b.ID}
	if len(got) != len(want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("events %v, want %v", got, want)
		}
	}
	removed := all[2]
	if u := removed.GetPayload().GetFields()["user_id"].GetStringValue(); u != m.GetMember().GetUserId() {
		t.Fatalf("member.removed payload user_id %q, want %q", u, m.GetMember().GetUserId())
	}
	if removed.GetEventId() == "" || removed.GetCreateTime() == nil || removed.GetCursor() == "" {
		t.Fatalf("incomplete event %v", removed)
	}

	// The type filter, and resuming from a cursor.
	only, _ := listAll(t, ev, svc, "", "member.removed", "tenant.deleting")
	if len(only) != 2 || only[0].GetType() != "member.removed" || only[1].GetType() != "tenant.deleting" {
		t.Fatalf("filtered events %v", only)
	}
	rest, _ := listAll(t, ev, svc, all[1].GetCursor())
	if len(rest) != 2 || rest[0].GetEventId() != removed.GetEventId() {
		t.Fatalf("events after the second: %v", rest)
	}
	if more, _ := listAll(t, ev, svc, end); len(more) != 0 {
		t.Fatalf("events after the end: %v", more)
	}

	cases := []struct {
		name  string
		token string
		req   *identityv1.ListEventsRequest
		want  codes.Code
	}{
		{"service without events.read", id.ServiceToken(t, "vaultbroker"), &identityv1.ListEventsRequest{}, codes.PermissionDenied},
		{"tenant owner", id.Token(t, a.OwnerKey), &identityv1.ListEventsRequest{}, codes.PermissionDenied},
		{"operator", id.OperatorToken(t), &identityv1.ListEventsRequest{}, codes.PermissionDenied},
		{"malformed cursor", svc, &identityv1.ListEventsRequest{AfterCursor: "12"}, codes.InvalidArgument},
		{"negative seq", svc, &identityv1.ListEventsRequest{AfterCursor: "12.-1"}, codes.InvalidArgument},
		{"unknown type", svc, &identityv1.ListEventsRequest{Types: []string{"member.added"}}, codes.InvalidArgument},
		{"page too large", svc, &identityv1.ListEventsRequest{PageSize: 501}, codes.InvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ev.ListEvents(as(t, tc.token), tc.req)
			if code(err) != tc.want {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// TestListEventsNeverSkipsALateCommit: an event whose transaction is still open when a later
// one commits is not skipped. ListEvents holds back everything from the open transaction on;
// once it commits, both events come out, the earlier transaction's first.
func TestListEventsNeverSkipsALateCommit(t *testing.T) {
	id := identitytest.Start(t, identitytest.Options{})
	c := newClients(t, id)
	ev := identityv1.NewEventServiceClient(id.Conn(t))
	a, b := id.CreateTenant(t, "a"), id.CreateTenant(t, "b")
	svc := id.ServiceToken(t, "connection")
	_, start := listAll(t, ev, svc, "")

	// An identity transaction that wrote an event and has not committed yet (in tenant B: its
	// foreign key locks B's row, which A's member removal below does not need).
	ctx := testCtx(t)
	tx, err := id.DB.SuperPool(t).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `INSERT INTO outbox (tenant_id, id, event_type, payload)
		VALUES ($1, gen_random_uuid(), 'tenant.suspended', '{"late": true}')`, b.ID); err != nil {
		t.Fatal(err)
	}

	// A later transaction commits its event meanwhile.
	aOwner := as(t, id.Token(t, a.OwnerKey))
	m, err := c.members.AddMember(aOwner, &identityv1.AddMemberRequest{TenantId: a.ID, Email: "x@a.example", Role: identityv1.Role_ROLE_MEMBER})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.members.RemoveMember(aOwner, &identityv1.RemoveMemberRequest{TenantId: a.ID, UserId: m.GetMember().GetUserId()}); err != nil {
		t.Fatal(err)
	}
	if held, _ := listAll(t, ev, svc, start); len(held) != 0 {
		t.Fatalf("events returned while an earlier transaction is open: %v", held)
	}

	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	got, _ := listAll(t, ev, svc, start)
	if len(got) != 2 || got[0].GetType() != "tenant.suspended" || got[1].GetType() != "member.removed" {
		t.Fatalf("events after the commit: %v", got)
	}
}
