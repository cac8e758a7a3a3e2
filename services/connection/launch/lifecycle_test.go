package launch_test

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	connectionv1 "github.com/bulkhead/bulkhead/gen/bulkhead/connection/v1"
	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	brokerv1 "github.com/bulkhead/bulkhead/gen/bulkhead/vaultbroker/v1"
	"github.com/bulkhead/bulkhead/pkg/grpcclient"
	"github.com/bulkhead/bulkhead/pkg/providertest"
	"github.com/bulkhead/bulkhead/services/connection/connectiontest"
	"github.com/bulkhead/bulkhead/services/connection/internal/store"
)

// TestRevoke: revoking calls the provider's RFC 7009 endpoint, deletes the credential, makes
// the connection unusable at once and is idempotent; a provider that fails keeps the
// revocation pending, and the next call completes it.
func TestRevoke(t *testing.T) {
	f := newOAuthFixture(t, providertest.Options{}, 1)
	conns := f.env.Connections(t, 0)
	before, err := f.token(t, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	brokerClient := f.env.Broker.Client(t, "connection")
	credReq := &brokerv1.GetCredentialRequest{TenantId: f.tenant.ID, ConnectionId: f.connID}
	if _, err := brokerClient.GetCredential(grpcclient.ActAs(testCtx(t), f.tenant.ID, f.owner), credReq); err != nil {
		t.Fatalf("credential before revocation: %v", err)
	}
	resp, err := conns.RevokeConnection(as(t, f.owner), &connectionv1.RevokeConnectionRequest{TenantId: f.tenant.ID, ConnectionId: f.connID})
	if err != nil {
		t.Fatal(err)
	}
	c := resp.GetConnection()
	if c.GetStatus() != connectionv1.ConnectionStatus_CONNECTION_STATUS_REVOKED || c.GetRevocationState() != connectionv1.RevocationState_REVOCATION_STATE_CONFIRMED {
		t.Fatalf("after revoke: %v", c)
	}
	revs := f.env.Provider.Revocations()
	if len(revs) != 1 || revs[0].TokenTypeHint != "refresh_token" || revs[0].ClientID != connectiontest.ClientID {
		t.Fatalf("revocations at the provider: %+v", revs)
	}
	_, err = f.token(t, 0, nil)
	wantReason(t, err, codes.FailedPrecondition, "CONNECTION_REVOKED")
	// The credential is gone from the vault-broker.
	_, err = brokerClient.GetCredential(grpcclient.ActAs(testCtx(t), f.tenant.ID, f.owner), credReq)
	wantCode(t, err, codes.NotFound)
	// The old access token no longer works at the provider (revoking the refresh token
	// revoked its grant).
	if code := providerStatus(t, f.env.Provider, before.GetAccessToken()); code != 401 {
		t.Fatalf("provider answered %d to the revoked token", code)
	}
	again, err := conns.RevokeConnection(as(t, f.owner), &connectionv1.RevokeConnectionRequest{TenantId: f.tenant.ID, ConnectionId: f.connID})
	if err != nil || again.GetConnection().GetRevocationState() != connectionv1.RevocationState_REVOCATION_STATE_CONFIRMED || len(f.env.Provider.Revocations()) != 1 {
		t.Fatalf("second revoke: %v, %v", again, err)
	}
	_, err = conns.SetConnectionEnabled(as(t, f.owner), &connectionv1.SetConnectionEnabledRequest{TenantId: f.tenant.ID, ConnectionId: f.connID, Enabled: true})
	wantReason(t, err, codes.FailedPrecondition, "CONNECTION_REVOKED")

	t.Run("pending until the provider confirms", func(t *testing.T) {
		id := f.env.Authorize(t, as(t, f.owner), 0, &connectionv1.StartAuthorizationRequest{TenantId: f.tenant.ID, Integration: connectiontest.OAuthOrg})
		f.env.Provider.FailNextRevocations(3, 503)
		resp, err := conns.RevokeConnection(as(t, f.owner), &connectionv1.RevokeConnectionRequest{TenantId: f.tenant.ID, ConnectionId: id})
		if err != nil {
			t.Fatal(err)
		}
		if c := resp.GetConnection(); c.GetStatus() != connectionv1.ConnectionStatus_CONNECTION_STATUS_REVOKED ||
			c.GetRevocationState() != connectionv1.RevocationState_REVOCATION_STATE_PENDING {
			t.Fatalf("after failing revocations: %v", c)
		}
		_, err = f.env.Connections(t, 0).GetAccessToken(viaService(t, f.owner, f.sync), &connectionv1.GetAccessTokenRequest{TenantId: f.tenant.ID, ConnectionId: id})
		wantReason(t, err, codes.FailedPrecondition, "CONNECTION_REVOKED")
		resp, err = conns.RevokeConnection(as(t, f.owner), &connectionv1.RevokeConnectionRequest{TenantId: f.tenant.ID, ConnectionId: id})
		if err != nil || resp.GetConnection().GetRevocationState() != connectionv1.RevocationState_REVOCATION_STATE_CONFIRMED {
			t.Fatalf("retried revoke: %v, %v", resp, err)
		}
	})
}

// TestDisable: a disabled connection, or every connection of a disabled integration, can be
// neither used nor refreshed; enabling restores it.
func TestDisable(t *testing.T) {
	f := newOAuthFixture(t, providertest.Options{}, 1)
	conns := f.env.Connections(t, 0)
	set := func(enabled bool) {
		t.Helper()
		resp, err := conns.SetConnectionEnabled(as(t, f.owner), &connectionv1.SetConnectionEnabledRequest{TenantId: f.tenant.ID, ConnectionId: f.connID, Enabled: enabled})
		if err != nil {
			t.Fatal(err)
		}
		want := connectionv1.ConnectionStatus_CONNECTION_STATUS_ACTIVE
		if !enabled {
			want = connectionv1.ConnectionStatus_CONNECTION_STATUS_DISABLED
		}
		if resp.GetConnection().GetStatus() != want {
			t.Fatalf("status %v, want %v", resp.GetConnection().GetStatus(), want)
		}
	}
	set(false)
	f.clk.advance(58 * time.Minute) // due for a refresh: it must not happen either
	_, err := f.token(t, 0, nil)
	wantReason(t, err, codes.FailedPrecondition, "CONNECTION_DISABLED")
	set(true)
	if _, err := f.token(t, 0, nil); err != nil {
		t.Fatal(err)
	}

	ints := f.env.Integrations(t, 0)
	off, on := false, true
	if _, err := ints.UpdateIntegrationSettings(as(t, f.owner), &connectionv1.UpdateIntegrationSettingsRequest{TenantId: f.tenant.ID, Integration: connectiontest.OAuthOrg, Enabled: &off}); err != nil {
		t.Fatal(err)
	}
	_, err = f.token(t, 0, nil)
	wantReason(t, err, codes.FailedPrecondition, "INTEGRATION_DISABLED")
	_, err = conns.StartAuthorization(as(t, f.owner), &connectionv1.StartAuthorizationRequest{TenantId: f.tenant.ID, Integration: connectiontest.OAuthOrg})
	wantReason(t, err, codes.FailedPrecondition, "INTEGRATION_DISABLED")
	if _, err := ints.UpdateIntegrationSettings(as(t, f.owner), &connectionv1.UpdateIntegrationSettingsRequest{TenantId: f.tenant.ID, Integration: connectiontest.OAuthOrg, Enabled: &on}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.token(t, 0, nil); err != nil {
		t.Fatal(err)
	}
	want := []store.EventType{store.EventCreated, store.EventDisabled, store.EventEnabled, store.EventRefreshed}
	if evs := f.events(t); len(evs) != len(want) || evs[1] != want[1] || evs[2] != want[2] {
		t.Fatalf("events %v, want %v", evs, want)
	}
	if n := f.env.Provider.TokenRequests(providertest.GrantRefreshToken); n != 1 {
		t.Fatalf("%d refreshes, want 1 (none while disabled)", n)
	}
}

// TestKillSwitch: once the tenant is suspended, every RPC of the connection service refuses
// its tokens — including a service acting for it — within the kill switch's TTL.
func TestKillSwitch(t *testing.T) {
	f := newOAuthFixture(t, providertest.Options{}, 1)
	conns := f.env.Connections(t, 0)
	if _, err := f.token(t, 0, nil); err != nil {
		t.Fatal(err)
	}
	tenants := identityv1.NewTenantServiceClient(f.env.Identity.Conn(t))
	if _, err := tenants.SuspendTenant(as(t, f.env.Identity.OperatorToken(t)), &identityv1.SuspendTenantRequest{TenantId: f.tenant.ID, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	// The status is cached for at most TenantStatusTTL (200ms here): poll until it bites.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := f.token(t, 0, nil)
		if statusCode(err) == codes.PermissionDenied {
			wantReason(t, err, codes.PermissionDenied, "TENANT_SUSPENDED")
			break
		}
		if err != nil || time.Now().After(deadline) {
			t.Fatalf("GetAccessToken of a suspended tenant: %v", err)
		}
	}
	calls := map[string]func() error{
		"GetConnection": func() error {
			_, err := conns.GetConnection(as(t, f.owner), &connectionv1.GetConnectionRequest{TenantId: f.tenant.ID, ConnectionId: f.connID})
			return err
		},
		"ListConnections": func() error {
			_, err := conns.ListConnections(as(t, f.owner), &connectionv1.ListConnectionsRequest{TenantId: f.tenant.ID})
			return err
		},
		"StartAuthorization": func() error {
			_, err := conns.StartAuthorization(as(t, f.owner), &connectionv1.StartAuthorizationRequest{TenantId: f.tenant.ID, Integration: connectiontest.OAuthOrg})
			return err
		},
		"GetAccessToken forced": func() error {
			_, err := f.token(t, 0, &connectionv1.GetAccessTokenRequest{ForceRefresh: true})
			return err
		},
	}
	for name, call := range calls {
		err := call()
		if statusCode(err) != codes.PermissionDenied {
			t.Errorf("%s: %v, want TENANT_SUSPENDED", name, err)
		}
	}
	if n := f.env.Provider.TokenRequests(providertest.GrantRefreshToken); n != 0 {
		t.Fatalf("a suspended tenant's connection was refreshed (%d)", n)
	}
}
