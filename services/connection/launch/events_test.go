package launch_test

import (
	"slices"
	"testing"

	"google.golang.org/grpc/codes"

	connectionv1 "github.com/bulkhead/bulkhead/gen/bulkhead/connection/v1"
	"github.com/bulkhead/bulkhead/services/connection/connectiontest"
)

// eventKey is what the events tests compare: whose event, which, about what.
type eventKey struct{ tenant, typ, conn string }

func keysOf(evs []*connectionv1.Event) []eventKey {
	out := make([]eventKey, len(evs))
	for i, e := range evs {
		out[i] = eventKey{e.GetTenantId(), e.GetType(), e.GetConnectionId()}
	}
	return out
}

// eventsWorld: tenants A and B each connect an org-level integration; A's is then disabled and
// enabled again. Four events, in that order, of two tenants.
type eventsWorld struct {
	env          *connectiontest.Env
	ev           connectionv1.EventServiceClient
	a, b         connectiontest.Tenant
	aOwner       string
	aConn, bConn string
	want         []eventKey
	svc          string // the token of a Bulkhead service holding events.read
}

func newEventsWorld(t *testing.T) *eventsWorld {
	env := connectiontest.Start(t, connectiontest.Options{})
	w := &eventsWorld{env: env, ev: env.Events(t, 0)}
	w.a, w.b = env.NewTenant(t, "a"), env.NewTenant(t, "b")
	w.aOwner = env.Identity.Token(t, w.a.OwnerKey)
	bOwner := env.Identity.Token(t, w.b.OwnerKey)
	w.aConn = env.Authorize(t, as(t, w.aOwner), 0, &connectionv1.StartAuthorizationRequest{TenantId: w.a.ID, Integration: connectiontest.OAuthOrg})
	w.bConn = env.Authorize(t, as(t, bOwner), 0, &connectionv1.StartAuthorizationRequest{TenantId: w.b.ID, Integration: connectiontest.OAuthOrg})
	conns := env.Connections(t, 0)
	for _, on := range []bool{false, true} {
		if _, err := conns.SetConnectionEnabled(as(t, w.aOwner), &connectionv1.SetConnectionEnabledRequest{TenantId: w.a.ID, ConnectionId: w.aConn, Enabled: on}); err != nil {
			t.Fatal(err)
		}
	}
	w.want = []eventKey{
		{w.a.ID, "connection.created", w.aConn},
		{w.b.ID, "connection.created", w.bConn},
		{w.a.ID, "connection.disabled", w.aConn},
		{w.a.ID, "connection.enabled", w.aConn},
	}
	// The connection service's own platform credential holds events.read in the test identity.
	w.svc = env.Identity.ServiceToken(t, "connection")
	return w
}

// all pages through every event with page size size.
func (w *eventsWorld) all(t *testing.T, size int32, types ...string) []*connectionv1.Event {
	t.Helper()
	var (
		out    []*connectionv1.Event
		cursor string
	)
	for range 100 {
		resp, err := w.ev.ListEvents(as(t, w.svc), &connectionv1.ListEventsRequest{AfterCursor: cursor, PageSize: size, Types: types})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetEvents()) == 0 {
			if resp.GetNextCursor() != cursor {
				t.Fatalf("empty page moved the cursor from %q to %q", cursor, resp.GetNextCursor())
			}
			return out
		}
		if size > 0 && len(resp.GetEvents()) > int(size) {
			t.Fatalf("page of %d events, asked for %d", len(resp.GetEvents()), size)
		}
		if last := resp.GetEvents()[len(resp.GetEvents())-1].GetCursor(); resp.GetNextCursor() != last {
			t.Fatalf("next_cursor %q, want the last event's %q", resp.GetNextCursor(), last)
		}
		out = append(out, resp.GetEvents()...)
		cursor = resp.GetNextCursor()
	}
	t.Fatal("ListEvents never ran out of events")
	return nil
}

// TestListEvents: a service with events.read reads both tenants' events, in the order they were
// written, each carrying its own tenant (in the event and its payload) and no credential; paging
// with any page size yields the same sequence; a type filter keeps only those types.
func TestListEvents(t *testing.T) {
	w := newEventsWorld(t)

	evs := w.all(t, 0)
	if got := keysOf(evs); !slices.Equal(got, w.want) {
		t.Fatalf("events:\n got  %v\n want %v", got, w.want)
	}
	seen := map[string]bool{}
	for _, e := range evs {
		p := e.GetPayload().AsMap()
		if p["tenant_id"] != e.GetTenantId() || p["connection_id"] != e.GetConnectionId() {
			t.Fatalf("payload %v does not match event %v", p, e)
		}
		for _, k := range []string{"access_token", "refresh_token", "secret", "client_secret"} {
			if _, ok := p[k]; ok {
				t.Fatalf("payload carries %q: %v", k, p)
			}
		}
		if e.GetCreateTime() == nil || e.GetEventId() == "" || seen[e.GetCursor()] {
			t.Fatalf("event without time or id, or a repeated cursor: %v", e)
		}
		seen[e.GetCursor()] = true
	}

	for _, size := range []int32{1, 3} {
		if got := keysOf(w.all(t, size)); !slices.Equal(got, w.want) {
			t.Fatalf("page size %d:\n got  %v\n want %v", size, got, w.want)
		}
	}
	// After the last cursor there is nothing; after the first, the rest.
	if got := keysOf(w.all(t, 2, "connection.disabled", "connection.enabled")); !slices.Equal(got, w.want[2:]) {
		t.Fatalf("filtered: %v, want %v", got, w.want[2:])
	}
	resp, err := w.ev.ListEvents(as(t, w.svc), &connectionv1.ListEventsRequest{AfterCursor: evs[0].GetCursor()})
	if err != nil {
		t.Fatal(err)
	}
	if got := keysOf(resp.GetEvents()); !slices.Equal(got, w.want[1:]) {
		t.Fatalf("after the first: %v, want %v", got, w.want[1:])
	}
	resp, err = w.ev.ListEvents(as(t, w.svc), &connectionv1.ListEventsRequest{AfterCursor: evs[len(evs)-1].GetCursor()})
	if err != nil || len(resp.GetEvents()) != 0 || resp.GetNextCursor() != evs[len(evs)-1].GetCursor() {
		t.Fatalf("after the last: %v, %v", resp, err)
	}
}

// TestListEventsRefusals: tenant principals (even the owner, through a service hop), the
// platform operator and a Bulkhead service without events.read are refused; bad cursors and
// unknown types are invalid.
func TestListEventsRefusals(t *testing.T) {
	w := newEventsWorld(t)
	syncToken := w.env.Identity.ServiceToken(t, "sync") // no events.read in the test identity
	for _, tc := range []struct {
		name string
		req  *connectionv1.ListEventsRequest
		want codes.Code
	}{
		{"tenant owner", &connectionv1.ListEventsRequest{}, codes.PermissionDenied},
		{"tenant owner via service hop", &connectionv1.ListEventsRequest{}, codes.PermissionDenied},
		{"operator", &connectionv1.ListEventsRequest{}, codes.PermissionDenied},
		{"service without events.read", &connectionv1.ListEventsRequest{}, codes.PermissionDenied},
		{"malformed cursor", &connectionv1.ListEventsRequest{AfterCursor: "12"}, codes.InvalidArgument},
		{"negative seq", &connectionv1.ListEventsRequest{AfterCursor: "12.-1"}, codes.InvalidArgument},
		{"unknown type", &connectionv1.ListEventsRequest{Types: []string{"member.removed"}}, codes.InvalidArgument},
		{"page too large", &connectionv1.ListEventsRequest{PageSize: 501}, codes.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := as(t, w.svc)
			switch tc.name {
			case "tenant owner":
				ctx = as(t, w.aOwner)
			case "tenant owner via service hop":
				ctx = viaService(t, w.aOwner, syncToken)
			case "operator":
				ctx = as(t, w.env.Identity.OperatorToken(t))
			case "service without events.read":
				ctx = as(t, syncToken)
			}
			_, err := w.ev.ListEvents(ctx, tc.req)
			wantCode(t, err, tc.want)
		})
	}
}

// TestListEventsNeverSkipsALateCommit: an event whose transaction is still open when a later
// one commits is not overtaken: the later event stays invisible until the earlier transaction
// ends, then both come in transaction order, so a consumer's cursor never passes an event.
func TestListEventsNeverSkipsALateCommit(t *testing.T) {
	w := newEventsWorld(t)
	ctx := testCtx(t)
	start := w.all(t, 0)
	cursor := start[len(start)-1].GetCursor()

	// An open transaction writes B's event first (as the owner role, scoped to B by RLS).
	tx, err := w.env.DB.OwnerPool(t).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SELECT set_config('app.tenant_id', $1, true)`, w.b.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO outbox (tenant_id, connection_id, event_type, payload)
		VALUES ($1, $2, 'connection.refresh_failed', '{"late": true}')`, w.b.ID, w.bConn); err != nil {
		t.Fatal(err)
	}
	// A later transaction commits A's event meanwhile.
	if _, err := w.env.Connections(t, 0).SetConnectionEnabled(as(t, w.aOwner), &connectionv1.SetConnectionEnabledRequest{TenantId: w.a.ID, ConnectionId: w.aConn, Enabled: false}); err != nil {
		t.Fatal(err)
	}
	resp, err := w.ev.ListEvents(as(t, w.svc), &connectionv1.ListEventsRequest{AfterCursor: cursor})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetEvents()) != 0 || resp.GetNextCursor() != cursor {
		t.Fatalf("events visible while an earlier transaction is open: %v", keysOf(resp.GetEvents()))
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	resp, err = w.ev.ListEvents(as(t, w.svc), &connectionv1.ListEventsRequest{AfterCursor: cursor})
	if err != nil {
		t.Fatal(err)
	}
	want := []eventKey{{w.b.ID, "connection.refresh_failed", w.bConn}, {w.a.ID, "connection.disabled", w.aConn}}
	if got := keysOf(resp.GetEvents()); !slices.Equal(got, want) {
		t.Fatalf("after the commit: %v, want %v", got, want)
	}
}
