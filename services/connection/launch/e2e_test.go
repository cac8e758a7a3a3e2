package launch_test

import (
	"net/http"
	"testing"

	connectionv1 "github.com/bulkhead/bulkhead/gen/bulkhead/connection/v1"
	"github.com/bulkhead/bulkhead/pkg/providertest"
	"github.com/bulkhead/bulkhead/services/connection/connectiontest"
)

// TestOAuthEndToEnd: an owner connects the org-level test integration through the whole
// OAuth2 flow (PKCE enforced by the provider), and a Bulkhead service acting for the owner gets
// an access token the provider API accepts.
func TestOAuthEndToEnd(t *testing.T) {
	env := connectiontest.Start(t, connectiontest.Options{})
	tenant := env.NewTenant(t, "acme")
	owner := env.Identity.Token(t, tenant.OwnerKey)
	conns := env.Connections(t, 0)

	id := env.Authorize(t, as(t, owner), 0, &connectionv1.StartAuthorizationRequest{
		TenantId: tenant.ID, Integration: connectiontest.OAuthOrg,
	})
	got, err := conns.GetConnection(as(t, owner), &connectionv1.GetConnectionRequest{TenantId: tenant.ID, ConnectionId: id})
	if err != nil {
		t.Fatal(err)
	}
	c := got.GetConnection()
	if c.GetStatus() != connectionv1.ConnectionStatus_CONNECTION_STATUS_ACTIVE || c.GetScope() != connectionv1.ConnectionScope_CONNECTION_SCOPE_ORG ||
		c.GetHealth().GetAccessTokenExpireTime() == nil || c.GetCreator() != "user:"+tenant.OwnerID {
		t.Fatalf("connection: %v", c)
	}
	tok, err := conns.GetAccessToken(viaService(t, owner, env.Identity.ServiceToken(t, "sync")),
		&connectionv1.GetAccessTokenRequest{TenantId: tenant.ID, ConnectionId: id})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(testCtx(t), http.MethodGet, env.Provider.URL+providertest.PathMe, nil)
	req.Header.Set("Authorization", "Bearer "+tok.GetAccessToken())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("provider API answered %d to the token", resp.StatusCode)
	}
	if n := env.Provider.TokenRequests(providertest.GrantAuthorizationCode); n != 1 {
		t.Fatalf("%d code exchanges at the provider, want 1", n)
	}
}
