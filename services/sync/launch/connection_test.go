package launch_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"maps"
	"slices"
	"testing"

	"github.com/riverqueue/river"

	connectionv1 "github.com/bulkhead/bulkhead/gen/bulkhead/connection/v1"
	syncv1 "github.com/bulkhead/bulkhead/gen/bulkhead/sync/v1"
	"github.com/bulkhead/bulkhead/pkg/authz"
	"github.com/bulkhead/bulkhead/pkg/providertest"
	"github.com/bulkhead/bulkhead/services/connection/connectiontest"
	"github.com/bulkhead/bulkhead/services/identity/identitytest"
	"github.com/bulkhead/bulkhead/services/sync/internal/connevents"
	"github.com/bulkhead/bulkhead/services/sync/internal/engine"
	"github.com/bulkhead/bulkhead/services/sync/internal/webhook"
	"github.com/bulkhead/bulkhead/services/sync/launch"
	"github.com/bulkhead/bulkhead/services/vaultbroker/brokertest"
)

// TestCredentialsFromTheConnectionService runs the whole chain: the sync service gets each
// run's credential from the connection service's GetAccessToken (with its own tenant token from
// identity), which reads it from the vault-broker (Vault) and obtains it from the provider's
// OAuth2 server; a revoked connection fails the run (cancelled, not retried) before anything
// reaches the provider, with the refusal as the sync's last error.
func TestCredentialsFromTheConnectionService(t *testing.T) {
	services := maps.Clone(brokertest.Services)
	// Background runs act as svc:sync within the tenant: using connections is a tenant
	// permission its platform credential must carry.
	services["sync"] = append(slices.Clone(services["sync"]), authz.ConnectionsUse)
	id := identitytest.Start(t, identitytest.Options{Services: services})
	env := connectiontest.Start(t, connectiontest.Options{
		Broker:   brokertest.Start(t, brokertest.Options{Identity: id}),
		Provider: providertest.Options{API: providertest.APIOptions{MaxPageSize: 10}},
	})
	h := startOn(t, id, env.Provider, func(c *launch.Config) { c.ConnectionAddr = env.Instances[0].GRPCAddr },
		func(o *launch.Options) { o.Tokens = nil })
	tenant := env.NewTenant(t, "acme")
	owner := as(t, id.Token(t, tenant.OwnerKey))
	const client = "cc-sync" // the provider account the client-credentials grant acts as
	if err := env.Provider.RegisterClient(client, "cc-secret", nil, []string{connectiontest.Scope}); err != nil {
		t.Fatal(err)
	}
	conns := env.Connections(t, 0)
	created, err := conns.CreateCredentialConnection(owner, &connectionv1.CreateCredentialConnectionRequest{
		TenantId: tenant.ID, Integration: connectiontest.ClientCredentials, Username: client, Secret: "cc-secret",
	})
	if err != nil {
		t.Fatal(err)
	}
	connID := created.GetConnection().GetConnectionId()

	started, err := h.client.StartSync(owner, &syncv1.StartSyncRequest{TenantId: tenant.ID, ConnectionId: connID, Integration: "providertest", Model: "records"})
	if err != nil {
		t.Fatal(err)
	}
	h.waitFinished(t, started.GetSync().GetSyncId())
	recs, _ := listAll(t, owner, h.client, tenant.ID, connID, "")
	want := env.Provider.Records(client)
	if len(recs) != len(want) || len(want) != 25 {
		t.Fatalf("synced %d records, the provider has %d", len(recs), len(want))
	}
	for _, r := range env.Provider.APIRequests() {
		if r.Path == providertest.PathRecords && r.ClientID != client {
			t.Fatalf("a provider request used client %q", r.ClientID)
		}
	}

	// Revoked: the next run fails at once with the credential refused, nothing reaches the
	// provider, and the error is visible.
	if _, err := conns.RevokeConnection(owner, &connectionv1.RevokeConnectionRequest{TenantId: tenant.ID, ConnectionId: connID}); err != nil {
		t.Fatal(err)
	}
	events, cancel := h.svc.Engine.River().Subscribe(river.EventKindJobCancelled)
	defer cancel()
	before := len(env.Provider.APIRequests())
	if _, err := h.client.TriggerSync(owner, &syncv1.TriggerSyncRequest{TenantId: tenant.ID, ConnectionId: connID, Model: "records"}); err != nil {
		t.Fatal(err)
	}
	for stopped := false; !stopped; {
		select {
		case ev := <-events:
			stopped = ev.Job.Kind == (engine.RunArgs{}).Kind()
		case <-testCtx(t).Done():
			t.Fatal("the run of a revoked connection was not cancelled")
		}
	}
	if n := len(env.Provider.APIRequests()); n != before {
		t.Fatalf("%d API requests after the revocation", n-before)
	}
	st, err := h.client.GetSyncStatus(owner, &syncv1.GetSyncStatusRequest{TenantId: tenant.ID, ConnectionId: connID, Model: "records"})
	if err != nil {
		t.Fatal(err)
	}
	if lr := st.GetSync().GetLastRun(); lr.GetStatus() != syncv1.RunStatus_RUN_STATUS_FAILED || st.GetSync().GetLastError() == "" {
		t.Fatalf("after revocation: last run %v, error %q", lr, st.GetSync().GetLastError())
	}
}

// TestConnectionEvents: the consumer of the connection service's outbox turns a revocation into
// a paused sync (its job cancelled, no waiting for the next run) and a signed
// connection.changed webhook delivery carrying the connection event's id; its cursor is kept
// in event_cursors.
func TestConnectionEvents(t *testing.T) {
	services := maps.Clone(brokertest.Services)
	services["sync"] = append(slices.Clone(services["sync"]), authz.ConnectionsUse, authz.EventsRead)
	id := identitytest.Start(t, identitytest.Options{Services: services})
	env := connectiontest.Start(t, connectiontest.Options{
		Broker:   brokertest.Start(t, brokertest.Options{Identity: id}),
		Provider: providertest.Options{API: providertest.APIOptions{MaxPageSize: 10}},
	})
	rc := &receiver{answers: map[string][]int{}, arrivals: make(chan struct{}, 1)}
	srv := httptest.NewTLSServer(rc)
	t.Cleanup(srv.Close)
	var (
		mu      sync.Mutex
		lastErr error
		passes  = make(chan connevents.Pass, 1000)
	)
	h := startOn(t, id, env.Provider, func(c *launch.Config) { c.ConnectionAddr = env.Instances[0].GRPCAddr },
		func(o *launch.Options) {
			o.Tokens = nil
			o.Webhooks = func(c *webhook.Config) {
				c.AllowLoopback = true
				c.TLS = srv.Client().Transport.(*http.Transport).TLSClientConfig
			}
			o.ConnectionEvents = func(c *connevents.Config) {
				c.Interval = 50 * time.Millisecond
				c.OnPass = func(p connevents.Pass) {
					mu.Lock()
					lastErr = p.Err
					mu.Unlock()
					select {
					case passes <- p:
					default:
					}
				}
			}
		})
	tenant := env.NewTenant(t, "acme")
	owner := as(t, id.Token(t, tenant.OwnerKey))
	const client = "cc-events"
	if err := env.Provider.RegisterClient(client, "cc-secret", nil, []string{connectiontest.Scope}); err != nil {
		t.Fatal(err)
	}
	wh := syncv1.NewWebhookServiceClient(h.conn)
	endpoint, err := wh.CreateWebhookEndpoint(owner, &syncv1.CreateWebhookEndpointRequest{TenantId: tenant.ID, Url: srv.URL + "/conn",
		Events: []syncv1.WebhookEvent{syncv1.WebhookEvent_WEBHOOK_EVENT_CONNECTION_CHANGED}})
	if err != nil {
		t.Fatal(err)
	}
	created, err := env.Connections(t, 0).CreateCredentialConnection(owner, &connectionv1.CreateCredentialConnectionRequest{
		TenantId: tenant.ID, Integration: connectiontest.ClientCredentials, Username: client, Secret: "cc-secret",
	})
	if err != nil {
		t.Fatal(err)
	}
	connID := created.GetConnection().GetConnectionId()
	started, err := h.client.StartSync(owner, &syncv1.StartSyncRequest{TenantId: tenant.ID, ConnectionId: connID, Integration: "providertest", Model: "records"})
	if err != nil {
		t.Fatal(err)
	}
	h.waitFinished(t, started.GetSync().GetSyncId())

	if _, err := env.Connections(t, 0).RevokeConnection(owner, &connectionv1.RevokeConnectionRequest{TenantId: tenant.ID, ConnectionId: connID}); err != nil {
		t.Fatal(err)
	}
	var change struct {
		Type string `json:"type"`
		Data struct {
			ConnectionID      string `json:"connection_id"`
			Type              string `json:"type"`
			ConnectionEventID string `json:"connection_event_id"`
			PausedSyncs       int    `json:"paused_syncs"`
		} `json:"data"`
	}
	for found := false; !found; {
		for _, d := range rc.deliveries("/conn") {
			if err := json.Unmarshal(d.body, &change); err != nil {
				t.Fatal(err)
			}
			if change.Data.Type == "connection.revoked" {
				if !webhook.Verify([]byte(endpoint.GetSigningSecret()), d.header, d.body, time.Now(), time.Hour) {
					t.Fatal("the connection.changed delivery does not verify with the endpoint's secret")
				}
				found = true
				break
			}
		}
		if found {
			break
		}
		select {
		case <-rc.arrivals:
		case <-testCtx(t).Done():
			mu.Lock()
			defer mu.Unlock()
			t.Fatalf("no connection.changed delivery for the revocation; last pass error: %v", lastErr)
		}
	}
	if change.Type != webhook.EventConnectionChanged || change.Data.ConnectionID != connID || change.Data.PausedSyncs != 1 || change.Data.ConnectionEventID == "" {
		t.Fatalf("delivery = %+v", change)
	}
	st, err := h.client.GetSyncStatus(owner, &syncv1.GetSyncStatusRequest{TenantId: tenant.ID, ConnectionId: connID, Model: "records"})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetSync().GetState() != syncv1.SyncState_SYNC_STATE_PAUSED {
		t.Fatalf("sync of the revoked connection = %v, want paused", st.GetSync())
	}
	// The cursor is stored: a restart does not replay the whole outbox.
	conn, err := pgx.Connect(testCtx(t), h.db.SuperURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var cursor string
	if err := conn.QueryRow(testCtx(t), `SELECT cursor FROM event_cursors WHERE consumer = $1`, connevents.Consumer).Scan(&cursor); err != nil || cursor == "" {
		t.Fatalf("stored cursor = %q, %v", cursor, err)
	}

	// Re-delivery (a crash before the cursor was saved, simulated by rewinding it): the events
	// are handled again without harm — the sync stays paused, nothing else is paused, and the
	// repeated webhook event carries the same connection event id.
	if _, err := conn.Exec(testCtx(t), `UPDATE event_cursors SET cursor = '' WHERE consumer = $1`, connevents.Consumer); err != nil {
		t.Fatal(err)
	}
	for replayed := false; !replayed; {
		select {
		case p := <-passes:
			replayed = p.Events > 0
		case <-testCtx(t).Done():
			t.Fatal("no pass re-handled the rewound events")
		}
	}
	revoked := 0
	for _, d := range rc.deliveries("/conn") {
		var again struct {
			Data struct {
				Type              string `json:"type"`
				ConnectionEventID string `json:"connection_event_id"`
				PausedSyncs       int    `json:"paused_syncs"`
			} `json:"data"`
		}
		if err := json.Unmarshal(d.body, &again); err != nil {
			t.Fatal(err)
		}
		if again.Data.Type != "connection.revoked" {
			continue
		}
		revoked++
		if again.Data.ConnectionEventID != change.Data.ConnectionEventID || (revoked > 1 && again.Data.PausedSyncs != 0) {
			t.Fatalf("re-delivered event = %+v, want the same connection event and nothing paused again", again.Data)
		}
	}
	if revoked == 0 {
		t.Fatal("no revocation delivery")
	}
	st, err = h.client.GetSyncStatus(owner, &syncv1.GetSyncStatusRequest{TenantId: tenant.ID, ConnectionId: connID, Model: "records"})
	if err != nil || st.GetSync().GetState() != syncv1.SyncState_SYNC_STATE_PAUSED {
		t.Fatalf("after re-delivery: %v, %v", st.GetSync(), err)
	}
}
