package launch_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	syncv1 "github.com/bulkhead/bulkhead/gen/bulkhead/sync/v1"
	"github.com/bulkhead/bulkhead/services/sync/internal/webhook"
	"github.com/bulkhead/bulkhead/services/sync/launch"
)

// receiver is a tenant's webhook endpoint on loopback (TLS with its own certificate).
type receiver struct {
	mu       sync.Mutex
	answers  map[string][]int // path → statuses to answer, in order; the last repeats
	got      []delivery
	arrivals chan struct{}
}

type delivery struct {
	path   string
	header http.Header
	body   []byte
	status int
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	q := rc.answers[r.URL.Path]
	status := http.StatusOK
	if len(q) > 0 {
		status = q[0]
		if len(q) > 1 {
			rc.answers[r.URL.Path] = q[1:]
		}
	}
	rc.got = append(rc.got, delivery{path: r.URL.Path, header: r.Header.Clone(), body: body, status: status})
	rc.mu.Unlock()
	if status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
	}
	w.WriteHeader(status)
	select {
	case rc.arrivals <- struct{}{}:
	default:
	}
}

func (rc *receiver) setAnswers(path string, statuses ...int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.answers[path] = statuses
}

func (rc *receiver) deliveries(path string) []delivery {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []delivery
	for _, d := range rc.got {
		if d.path == path {
			out = append(out, d)
		}
	}
	return out
}

func TestWebhooks(t *testing.T) {
	rc := &receiver{answers: map[string][]int{}, arrivals: make(chan struct{}, 1)}
	srv := httptest.NewTLSServer(rc)
	t.Cleanup(srv.Close)
	h := start(t, func(o *launch.Options) {
		o.Webhooks = func(c *webhook.Config) {
			c.AllowLoopback = true
			c.TLS = srv.Client().Transport.(*http.Transport).TLSClientConfig
			c.FirstRetry = 100 * time.Millisecond
		}
	})
	wh := syncv1.NewWebhookServiceClient(h.conn)
	a, b := h.id.CreateTenant(t, "alpha"), h.id.CreateTenant(t, "bravo")
	ctxA, ctxB := as(t, h.id.Token(t, a.OwnerKey)), as(t, h.id.Token(t, b.OwnerKey))

	for _, bad := range []string{"http://example.com/hook", "https://10.1.2.3/hook", "https://169.254.169.254/x"} {
		_, err := wh.CreateWebhookEndpoint(ctxA, &syncv1.CreateWebhookEndpointRequest{TenantId: a.ID, Url: bad,
			Events: []syncv1.WebhookEvent{syncv1.WebhookEvent_WEBHOOK_EVENT_SYNC_COMPLETED}})
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("CreateWebhookEndpoint(%s) = %v, want InvalidArgument", bad, err)
		}
	}
	// /done answers 429 (Retry-After: 1) once, then 200; /gone answers 410 until told otherwise.
	rc.setAnswers("/done", 429, 200)
	rc.setAnswers("/gone", 410)
	done, err := wh.CreateWebhookEndpoint(ctxA, &syncv1.CreateWebhookEndpointRequest{TenantId: a.ID, Url: srv.URL + "/done",
		Events: []syncv1.WebhookEvent{syncv1.WebhookEvent_WEBHOOK_EVENT_SYNC_COMPLETED}})
	if err != nil {
		t.Fatal(err)
	}
	gone, err := wh.CreateWebhookEndpoint(ctxA, &syncv1.CreateWebhookEndpointRequest{TenantId: a.ID, Url: srv.URL + "/gone",
		Events: []syncv1.WebhookEvent{syncv1.WebhookEvent_WEBHOOK_EVENT_RECORDS_CHANGED}})
	if err != nil {
		t.Fatal(err)
	}

	connA, _ := h.connect(t, a.ID)
	started, err := h.client.StartSync(ctxA, &syncv1.StartSyncRequest{TenantId: a.ID, ConnectionId: connA, Integration: "providertest", Model: "records"})
	if err != nil {
		t.Fatal(err)
	}
	h.waitFinished(t, started.GetSync().GetSyncId())

	list := func(endpoint string, state syncv1.DeliveryState) []*syncv1.WebhookDelivery {
		resp, err := wh.ListWebhookDeliveries(ctxA, &syncv1.ListWebhookDeliveriesRequest{TenantId: a.ID, EndpointId: endpoint, State: state})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetDeliveries()
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			select {
			case <-rc.arrivals:
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	waitFor("sync.completed delivered", func() bool {
		return len(list(done.GetEndpoint().GetEndpointId(), syncv1.DeliveryState_DELIVERY_STATE_DELIVERED)) == 1
	})
	d := list(done.GetEndpoint().GetEndpointId(), 0)[0]
	if d.GetAttempts() != 2 || d.GetLastStatusCode() != 200 || d.GetEvent() != syncv1.WebhookEvent_WEBHOOK_EVENT_SYNC_COMPLETED {
		t.Fatalf("delivery = %v", d)
	}
	got := rc.deliveries("/done")
	if len(got) != 2 || got[0].status != 429 || got[1].status != 200 {
		t.Fatalf("receiver saw %d attempts", len(got))
	}
	secret := []byte(done.GetSigningSecret())
	for _, g := range got {
		if !webhook.Verify(secret, g.header, g.body, time.Now(), 5*time.Minute) {
			t.Fatalf("signature does not verify: %v", g.header)
		}
		if g.header.Get(webhook.HeaderID) != d.GetEventId() {
			t.Fatalf("event id header %q, want %q on every attempt", g.header.Get(webhook.HeaderID), d.GetEventId())
		}
	}
	var body struct {
		ID   string `json:"id"`
		Type string `json:"type"`
		Data struct {
			Added int64 `json:"added"`
			Run   int64 `json:"run"`
		} `json:"data"`
	}
	if err := json.Unmarshal(got[1].body, &body); err != nil || body.ID != d.GetEventId() || body.Type != "sync.completed" || body.Data.Added != 25 || body.Data.Run != 1 {
		t.Fatalf("body = %s (%v)", got[1].body, err)
	}
	// Tampering is detected by the documented scheme.
	if webhook.Verify(secret, got[1].header, append([]byte(" "), got[1].body...), time.Now(), 5*time.Minute) {
		t.Fatal("a tampered body verified")
	}

	// records.changed to /gone: one per committed page (3), refused with 410 → dead letters.
	waitFor("dead letters", func() bool {
		return len(list(gone.GetEndpoint().GetEndpointId(), syncv1.DeliveryState_DELIVERY_STATE_DEAD_LETTER)) == 3
	})
	dead := list(gone.GetEndpoint().GetEndpointId(), syncv1.DeliveryState_DELIVERY_STATE_DEAD_LETTER)
	for _, x := range dead {
		if x.GetAttempts() != 1 || x.GetLastStatusCode() != 410 {
			t.Fatalf("dead letter = %v", x)
		}
	}

	// Another tenant sees none of it and cannot replay or delete it.
	if resp, err := wh.ListWebhookDeliveries(ctxB, &syncv1.ListWebhookDeliveriesRequest{TenantId: b.ID}); err != nil || len(resp.GetDeliveries()) != 0 {
		t.Fatalf("B's deliveries = %v, %v", resp.GetDeliveries(), err)
	}
	for _, tenant := range []string{a.ID, b.ID} {
		if _, err := wh.ReplayWebhookDelivery(ctxB, &syncv1.ReplayWebhookDeliveryRequest{TenantId: tenant, DeliveryId: dead[0].GetDeliveryId()}); status.Code(err) != codes.NotFound {
			t.Fatalf("B replaying A's delivery = %v", err)
		}
		if _, err := wh.DeleteWebhookEndpoint(ctxB, &syncv1.DeleteWebhookEndpointRequest{TenantId: tenant, EndpointId: gone.GetEndpoint().GetEndpointId()}); status.Code(err) != codes.NotFound {
			t.Fatalf("B deleting A's endpoint = %v", err)
		}
	}

	// The receiver is fixed: a replay delivers the same event.
	rc.setAnswers("/gone", 200)
	if _, err := wh.ReplayWebhookDelivery(ctxA, &syncv1.ReplayWebhookDeliveryRequest{TenantId: a.ID, DeliveryId: dead[0].GetDeliveryId()}); err != nil {
		t.Fatal(err)
	}
	waitFor("the replay", func() bool {
		return len(list(gone.GetEndpoint().GetEndpointId(), syncv1.DeliveryState_DELIVERY_STATE_DELIVERED)) == 1
	})
	last := rc.deliveries("/gone")
	if g := last[len(last)-1]; g.status != 200 || g.header.Get(webhook.HeaderID) != dead[0].GetEventId() ||
		!webhook.Verify([]byte(gone.GetSigningSecret()), g.header, g.body, time.Now(), 5*time.Minute) {
		t.Fatalf("replayed delivery: status %d id %q", g.status, g.header.Get(webhook.HeaderID))
	}
	if _, err := wh.ReplayWebhookDelivery(ctxA, &syncv1.ReplayWebhookDeliveryRequest{TenantId: a.ID, DeliveryId: d.GetDeliveryId()}); err != nil {
		t.Fatalf("replaying a delivered delivery = %v", err)
	}
}
