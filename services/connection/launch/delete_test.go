package launch_test

import (
	"testing"

	"google.golang.org/grpc/codes"

	connectionv1 "github.com/bulkhead/bulkhead/gen/bulkhead/connection/v1"
	brokerv1 "github.com/bulkhead/bulkhead/gen/bulkhead/vaultbroker/v1"
	"github.com/bulkhead/bulkhead/pkg/grpcclient"
	"github.com/bulkhead/bulkhead/services/connection/connectiontest"
)

// TestDeleteConnection: deleting an OAuth2 connection revokes it at the provider first (one
// RFC 7009 call), deletes the broker credential and the row (NOT_FOUND, no longer listed),
// with connection.revoked then connection.deleted in the outbox; a retried delete answers
// NOT_FOUND, or OK with allow_missing. A delete whose revocation the provider refuses answers
// REVOCATION_PENDING and keeps the (revoked) connection until a later delete succeeds.
func TestDeleteConnection(t *testing.T) {
	env := connectiontest.Start(t, connectiontest.Options{})
	tenant := env.NewTenant(t, "acme")
	owner := env.Identity.Token(t, tenant.OwnerKey)
	conns := env.Connections(t, 0)
	brokerClient := env.Broker.Client(t, "connection")
	credential := func(id string) error {
		_, err := brokerClient.GetCredential(grpcclient.ActAs(testCtx(t), tenant.ID, owner), &brokerv1.GetCredentialRequest{TenantId: tenant.ID, ConnectionId: id})
		return err
	}
	del := func(id string, allowMissing bool) error {
		_, err := conns.DeleteConnection(as(t, owner), &connectionv1.DeleteConnectionRequest{TenantId: tenant.ID, ConnectionId: id, AllowMissing: allowMissing})
		return err
	}
	get := func(id string) (*connectionv1.GetConnectionResponse, error) {
		return conns.GetConnection(as(t, owner), &connectionv1.GetConnectionRequest{TenantId: tenant.ID, ConnectionId: id})
	}

	id := env.Authorize(t, as(t, owner), 0, &connectionv1.StartAuthorizationRequest{TenantId: tenant.ID, Integration: connectiontest.OAuthOrg})
	if err := del(id, false); err != nil {
		t.Fatal(err)
	}
	if n := len(env.Provider.Revocations()); n != 1 {
		t.Fatalf("%d revocations at the provider, want 1", n)
	}
	_, err := get(id)
	wantCode(t, err, codes.NotFound)
	wantCode(t, credential(id), codes.NotFound)
	list, err := conns.ListConnections(as(t, owner), &connectionv1.ListConnectionsRequest{TenantId: tenant.ID})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(list.GetConnections()); n != 0 {
		t.Fatalf("%d connections listed after the delete", n)
	}
	wantCode(t, del(id, false), codes.NotFound)
	if err := del(id, true); err != nil {
		t.Fatalf("retried delete with allow_missing: %v", err)
	}
	if n := len(env.Provider.Revocations()); n != 1 {
		t.Fatalf("%d revocations at the provider after the retries, want 1", n)
	}
	evs, err := env.Events(t, 0).ListEvents(as(t, env.Identity.ServiceToken(t, "connection")), &connectionv1.ListEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, e := range evs.GetEvents() {
		if e.GetConnectionId() == id {
			types = append(types, e.GetType())
		}
	}
	if n := len(types); n < 2 || types[n-2] != "connection.revoked" || types[n-1] != "connection.deleted" {
		t.Fatalf("events %v, want … connection.revoked, connection.deleted", types)
	}

	// The provider fails the revocation: the connection stays, revoked and pending.
	id = env.Authorize(t, as(t, owner), 0, &connectionv1.StartAuthorizationRequest{TenantId: tenant.ID, Integration: connectiontest.OAuthOrg})
	env.Provider.FailNextRevocations(3, 503)
	wantReason(t, del(id, false), codes.FailedPrecondition, "REVOCATION_PENDING")
	got, err := get(id)
	if err != nil {
		t.Fatalf("connection after a pending delete: %v", err)
	}
	if got.GetConnection().GetStatus() != connectionv1.ConnectionStatus_CONNECTION_STATUS_REVOKED ||
		got.GetConnection().GetRevocationState() != connectionv1.RevocationState_REVOCATION_STATE_PENDING {
		t.Fatalf("connection after a pending delete: %v", got.GetConnection())
	}
	if err := del(id, false); err != nil {
		t.Fatalf("delete once the provider answers: %v", err)
	}
	_, err = get(id)
	wantCode(t, err, codes.NotFound)
	wantCode(t, credential(id), codes.NotFound)

	// An API key connection (no revocation endpoint): revoked as not_supported, then deleted.
	env.Provider.AddAPIKey("key-1", "acct")
	created, err := conns.CreateCredentialConnection(as(t, owner), &connectionv1.CreateCredentialConnectionRequest{
		TenantId: tenant.ID, Integration: connectiontest.APIKey, Secret: "key-1",
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := del(created.GetConnection().GetConnectionId(), false); err != nil {
		t.Fatal(err)
	}
	_, err = get(created.GetConnection().GetConnectionId())
	wantCode(t, err, codes.NotFound)
}
