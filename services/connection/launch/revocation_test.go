package launch_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	connectionv1 "github.com/bulkhead/bulkhead/gen/bulkhead/connection/v1"
	brokerv1 "github.com/bulkhead/bulkhead/gen/bulkhead/vaultbroker/v1"
	"github.com/bulkhead/bulkhead/pkg/grpcclient"
	"github.com/bulkhead/bulkhead/pkg/providertest"
	"github.com/bulkhead/bulkhead/services/connection/connectiontest"
	"github.com/bulkhead/bulkhead/services/connection/launch"
)

// credentialGone asserts that the broker no longer holds the connection's credential.
func credentialGone(t *testing.T, env *connectiontest.Env, tenantID, token, id string) {
	t.Helper()
	_, err := env.Broker.Client(t, "connection").GetCredential(grpcclient.ActAs(testCtx(t), tenantID, token),
		&brokerv1.GetCredentialRequest{TenantId: tenantID, ConnectionId: id})
	wantCode(t, err, codes.NotFound)
}

// eventTypes lists the outbox event types of connection id, oldest first.
func eventTypes(t *testing.T, env *connectiontest.Env, id string) []string {
	t.Helper()
	evs, err := env.Events(t, 0).ListEvents(as(t, env.Identity.ServiceToken(t, "connection")), &connectionv1.ListEventsRequest{PageSize: 500})
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, e := range evs.GetEvents() {
		if e.GetConnectionId() == id {
			types = append(types, e.GetType())
		}
	}
	return types
}

// TestRevocationRefusedForGood: the provider answers the revocation request with a 4xx other
// than 408/429 (RFC 7009: 400 invalid_request, 401 invalid_client) — asking again cannot
// help, so RevokeConnection gives up after that one request: REVOCATION_STATE_FAILED with a
// secret-free reason, the broker credential deleted, connection.revocation_failed in the
// outbox, and DeleteConnection goes through. A 429 is not final: the revocation stays pending.
func TestRevocationRefusedForGood(t *testing.T) {
	f := newOAuthFixture(t, providertest.Options{}, 1)
	conns := f.env.Connections(t, 0)
	for _, tc := range []struct {
		status int
		want   connectionv1.RevocationState
		reason string
	}{
		{400, connectionv1.RevocationState_REVOCATION_STATE_FAILED, "provider answered 400 invalid_grant"},
		{401, connectionv1.RevocationState_REVOCATION_STATE_FAILED, "provider answered 401 invalid_client"},
		{429, connectionv1.RevocationState_REVOCATION_STATE_PENDING, ""},
	} {
		id := f.env.Authorize(t, as(t, f.owner), 0, &connectionv1.StartAuthorizationRequest{TenantId: f.tenant.ID, Integration: connectiontest.OAuthOrg})
		before := len(f.env.Provider.Revocations())
		f.env.Provider.FailNextRevocations(revokeAttempts, tc.status)
		resp, err := conns.RevokeConnection(as(t, f.owner), &connectionv1.RevokeConnectionRequest{TenantId: f.tenant.ID, ConnectionId: id})
		if err != nil {
			t.Fatalf("%d: %v", tc.status, err)
		}
		c := resp.GetConnection()
		if c.GetStatus() != connectionv1.ConnectionStatus_CONNECTION_STATUS_REVOKED || c.GetRevocationState() != tc.want ||
			c.GetRevocationFailureReason() != tc.reason {
			t.Fatalf("%d: revoked connection %v, want %v with reason %q", tc.status, c, tc.want, tc.reason)
		}
		requests := len(f.env.Provider.Revocations()) - before
		del := func() error {
			_, err := conns.DeleteConnection(as(t, f.owner), &connectionv1.DeleteConnectionRequest{TenantId: f.tenant.ID, ConnectionId: id})
			return err
		}
		if tc.want == connectionv1.RevocationState_REVOCATION_STATE_PENDING {
			if requests != revokeAttempts {
				t.Fatalf("%d: %d revocation requests, want %d (it is retried)", tc.status, requests, revokeAttempts)
			}
			continue
		}
		if requests != 1 {
			t.Fatalf("%d: %d revocation requests, want 1 (a final refusal is not retried)", tc.status, requests)
		}
		credentialGone(t, f.env, f.tenant.ID, f.owner, id)
		if types := eventTypes(t, f.env, id); !slices.Equal(types[len(types)-2:], []string{"connection.revoked", "connection.revocation_failed"}) {
			t.Fatalf("%d: events %v", tc.status, types)
		}
		if err := del(); err != nil {
			t.Fatalf("%d: deleting a failed revocation: %v", tc.status, err)
		}
		_, err = conns.GetConnection(as(t, f.owner), &connectionv1.GetConnectionRequest{TenantId: f.tenant.ID, ConnectionId: id})
		wantCode(t, err, codes.NotFound)
		if requests := len(f.env.Provider.Revocations()) - before; requests != 1 {
			t.Fatalf("%d: the delete called the provider again (%d requests)", tc.status, requests)
		}
	}
}

// revokeAttempts is the service's provider calls per revocation attempt (app.revokeAttempts).
const revokeAttempts = 3

// TestWorkerGivesUpRevocation: a revocation the provider keeps failing transiently (503)
// stays pending through the worker's retries within the give-up period (72h by default); the
// first retry after it has passed, measured from the revocation, gives up: failed, with the
// last failure as the reason, the broker credential deleted, connection.revocation_failed,
// and the connection can be deleted. The clock is the fixture's, not a sleep.
func TestWorkerGivesUpRevocation(t *testing.T) {
	f := newWorkerFixture(t, providertest.Options{}, 1)
	conns := f.env.Connections(t, 0)
	f.env.Provider.FailNextRevocations(1000, 503)
	resp, err := conns.RevokeConnection(as(t, f.owner), &connectionv1.RevokeConnectionRequest{TenantId: f.tenant.ID, ConnectionId: f.connID})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetConnection().GetRevocationState(); got != connectionv1.RevocationState_REVOCATION_STATE_PENDING {
		t.Fatalf("after RevokeConnection: %v", got)
	}
	// Within the period (71 hours later): retried, still pending.
	f.clk.advance(71 * time.Hour)
	f.waitPass(t, "retrying within the give-up period", func(p launch.WorkerPass) bool { return p.Pending == 1 })
	if got := f.get(t); got.GetRevocationState() != connectionv1.RevocationState_REVOCATION_STATE_PENDING || got.GetRevocationFailureReason() != "" {
		t.Fatalf("within the give-up period: %v", got)
	}
	// Past it: the next due retry gives up.
	f.clk.advance(2 * time.Hour)
	f.waitPass(t, "giving up", func(p launch.WorkerPass) bool { return p.GivenUp == 1 && p.Err == nil })
	got := f.get(t)
	if got.GetRevocationState() != connectionv1.RevocationState_REVOCATION_STATE_FAILED ||
		!strings.Contains(got.GetRevocationFailureReason(), "give-up period") ||
		!strings.Contains(got.GetRevocationFailureReason(), "provider answered 503 server_error") {
		t.Fatalf("after the give-up period: %v", got)
	}
	credentialGone(t, f.env, f.tenant.ID, f.owner, f.connID)
	if types := eventTypes(t, f.env, f.connID); types[len(types)-1] != "connection.revocation_failed" {
		t.Fatalf("events %v", types)
	}
	// Final: later passes find nothing to do, and the provider is not asked again.
	n := len(f.env.Provider.Revocations())
	f.clk.advance(2 * time.Hour)
	f.waitPass(t, "after giving up", func(p launch.WorkerPass) bool { return p.Due == 0 && p.Err == nil })
	if m := len(f.env.Provider.Revocations()); m != n {
		t.Fatalf("the provider was asked %d more times after the give-up", m-n)
	}
	if _, err := conns.DeleteConnection(as(t, f.owner), &connectionv1.DeleteConnectionRequest{TenantId: f.tenant.ID, ConnectionId: f.connID}); err != nil {
		t.Fatalf("deleting a given-up revocation: %v", err)
	}
}

// TestRevocationGiveUpConfigurable: the give-up period is the service's
// BULKHEAD_CONNECTION_REVOCATION_GIVE_UP; with one hour, a retry two hours after the
// revocation gives up.
func TestRevocationGiveUpConfigurable(t *testing.T) {
	clk := &clock{}
	env := connectiontest.Start(t, connectiontest.Options{Now: clk.now, Configure: func(c *launch.Config) {
		c.RevocationGiveUp = time.Hour
	}})
	tenant := env.NewTenant(t, "acme")
	owner := env.Identity.Token(t, tenant.OwnerKey)
	conns := env.Connections(t, 0)
	id := env.Authorize(t, as(t, owner), 0, &connectionv1.StartAuthorizationRequest{TenantId: tenant.ID, Integration: connectiontest.OAuthOrg})
	env.Provider.FailNextRevocations(2*revokeAttempts, 503)
	revoke := func() *connectionv1.Connection {
		t.Helper()
		resp, err := conns.RevokeConnection(as(t, owner), &connectionv1.RevokeConnectionRequest{TenantId: tenant.ID, ConnectionId: id})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetConnection()
	}
	if got := revoke(); got.GetRevocationState() != connectionv1.RevocationState_REVOCATION_STATE_PENDING {
		t.Fatalf("first revocation: %v", got)
	}
	clk.advance(2 * time.Hour)
	if got := revoke(); got.GetRevocationState() != connectionv1.RevocationState_REVOCATION_STATE_FAILED {
		t.Fatalf("a retry past the one-hour give-up period: %v", got)
	}
	credentialGone(t, env, tenant.ID, owner, id)
}

// TestRevocationCredentialGone: a connection whose broker credential is gone cannot be revoked
// at the provider (there is no token to send): its revocation ends failed at once, without a
// provider call, and the connection can be deleted.
func TestRevocationCredentialGone(t *testing.T) {
	f := newOAuthFixture(t, providertest.Options{}, 1)
	conns := f.env.Connections(t, 0)
	_, err := f.env.Broker.Client(t, "connection").DeleteCredential(grpcclient.ActAs(testCtx(t), f.tenant.ID, f.owner),
		&brokerv1.DeleteCredentialRequest{TenantId: f.tenant.ID, ConnectionId: f.connID})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := conns.RevokeConnection(as(t, f.owner), &connectionv1.RevokeConnectionRequest{TenantId: f.tenant.ID, ConnectionId: f.connID})
	if err != nil {
		t.Fatal(err)
	}
	if c := resp.GetConnection(); c.GetRevocationState() != connectionv1.RevocationState_REVOCATION_STATE_FAILED ||
		!strings.Contains(c.GetRevocationFailureReason(), "credential missing") {
		t.Fatalf("revoked connection %v, want failed: credential missing", c)
	}
	if n := len(f.env.Provider.Revocations()); n != 0 {
		t.Fatalf("%d revocation requests without a credential", n)
	}
	if _, err := conns.DeleteConnection(as(t, f.owner), &connectionv1.DeleteConnectionRequest{TenantId: f.tenant.ID, ConnectionId: f.connID}); err != nil {
		t.Fatalf("deleting it: %v", err)
	}
}
