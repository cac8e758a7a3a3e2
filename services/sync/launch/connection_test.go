package launch_test

import (
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
	"github.com/bulkhead/bulkhead/services/sync/internal/engine"
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
