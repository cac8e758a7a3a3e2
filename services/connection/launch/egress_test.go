package launch_test

import (
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	connectionv1 "github.com/bulkhead/bulkhead/gen/bulkhead/connection/v1"
	"github.com/bulkhead/bulkhead/pkg/providertest"
	"github.com/bulkhead/bulkhead/services/connection/connectiontest"
	"github.com/bulkhead/bulkhead/services/connection/internal/catalog"
	"github.com/bulkhead/bulkhead/services/connection/launch"
)

// TestProviderCallsEgressGuard: the service's own calls to a provider — the client credentials
// token request (x/oauth2) and the credential test endpoint — go through the egress guard: an
// integration whose endpoint is the provider's internal server (loopback, not allow-listed,
// written as an IP literal or as a name resolving to loopback) fails with EGRESS_REFUSED and
// the internal server sees nothing, while the allow-listed provider still works. A revocation
// endpoint the guard refuses ends the revocation failed, and the connection deletable.
func TestProviderCallsEgressGuard(t *testing.T) {
	env := connectiontest.Start(t, connectiontest.Options{
		Configure: func(c *launch.Config) {
			c.OAuthApps["internal-revocation"] = launch.OAuthApp{ClientID: connectiontest.ClientID, ClientSecret: launch.Secret(connectiontest.ClientSecret)}
		},
		Integrations: func(p *providertest.Provider) []catalog.Provider {
			byName := strings.Replace(p.InternalURL, "127.0.0.1", "localhost", 1)
			cc := func(key, base string) catalog.Provider {
				return catalog.Provider{
					Key: key, DisplayName: key, AuthType: catalog.AuthOAuth2ClientCredentials, DefaultConnectionScope: catalog.ScopeOrg,
					OAuth2: &catalog.OAuth2{TokenURL: base + providertest.PathInternal, TokenAuthMethod: catalog.TokenAuthBasic, AccessTokenExpires: true},
					API:    catalog.API{BaseURLs: []string{p.URL + "/api"}},
				}
			}
			key := func(k, base string) catalog.Provider {
				return catalog.Provider{
					Key: k, DisplayName: k, AuthType: catalog.AuthAPIKey, DefaultConnectionScope: catalog.ScopeOrg,
					APIKey: &catalog.APIKey{In: catalog.APIKeyInHeader, Name: "X-Api-Key"},
					API: catalog.API{BaseURLs: []string{base}, TestEndpoint: &catalog.TestEndpoint{
						Method: http.MethodGet, Path: providertest.PathInternal, ExpectedStatus: http.StatusOK}},
				}
			}
			revoke := catalog.Provider{
				Key: "internal-revocation", DisplayName: "internal revocation", AuthType: catalog.AuthOAuth2AuthorizationCode,
				DefaultConnectionScope: catalog.ScopeOrg,
				OAuth2: &catalog.OAuth2{
					AuthorizationURL: p.AuthURL(), TokenURL: p.TokenURL(), RevocationURL: p.InternalURL + providertest.PathInternal,
					RevocationStyle: catalog.RevocationRFC7009, TokenAuthMethod: catalog.TokenAuthBasic,
					DefaultScopes: []string{connectiontest.Scope}, RefreshTokenRotation: true, AccessTokenExpires: true,
				},
				API: catalog.API{BaseURLs: []string{p.URL + "/api"}},
			}
			return []catalog.Provider{
				revoke, cc("internal-token-ip", p.InternalURL), cc("internal-token-name", byName),
				key("internal-test-ip", p.InternalURL), key("internal-test-name", byName),
			}
		},
	})
	tenant := env.NewTenant(t, "acme")
	owner := env.Identity.Token(t, tenant.OwnerKey)
	conns := env.Connections(t, 0)
	env.Provider.AddAPIKey("good-key", "acct")
	if err := env.Provider.RegisterClient("cc-client", "cc-secret", nil, []string{connectiontest.Scope}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name, integration, username, secret string
		want                                codes.Code
		reason                              string
	}{
		{"token endpoint at internal IP", "internal-token-ip", "cc-client", "cc-secret", codes.FailedPrecondition, "EGRESS_REFUSED"},
		{"token endpoint at name resolving to loopback", "internal-token-name", "cc-client", "cc-secret", codes.FailedPrecondition, "EGRESS_REFUSED"},
		{"test endpoint at internal IP", "internal-test-ip", "", "good-key", codes.FailedPrecondition, "EGRESS_REFUSED"},
		{"test endpoint at name resolving to loopback", "internal-test-name", "", "good-key", codes.FailedPrecondition, "EGRESS_REFUSED"},
		{"allow-listed provider", connectiontest.ClientCredentials, "cc-client", "cc-secret", codes.OK, ""},
		{"allow-listed provider test endpoint", connectiontest.APIKey, "", "good-key", codes.OK, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := conns.CreateCredentialConnection(as(t, owner), &connectionv1.CreateCredentialConnectionRequest{
				TenantId: tenant.ID, Integration: tc.integration, Username: tc.username, Secret: tc.secret,
			})
			if tc.reason != "" {
				wantReason(t, err, tc.want, tc.reason)
				return
			}
			wantCode(t, err, tc.want)
		})
	}
	// The revocation endpoint too, and for good: retrying cannot change the egress policy, so
	// the revocation is given up at once (failed, with the reason), the credential deleted,
	// and the connection can be deleted — it no longer stays pending forever.
	oauthConn := env.Authorize(t, as(t, owner), 0, &connectionv1.StartAuthorizationRequest{TenantId: tenant.ID, Integration: "internal-revocation"})
	revoked, err := conns.RevokeConnection(as(t, owner), &connectionv1.RevokeConnectionRequest{TenantId: tenant.ID, ConnectionId: oauthConn})
	if err != nil {
		t.Fatal(err)
	}
	if got := revoked.GetConnection(); got.GetRevocationState() != connectionv1.RevocationState_REVOCATION_STATE_FAILED ||
		!strings.Contains(got.GetRevocationFailureReason(), "egress") {
		t.Fatalf("revoked connection %v, want failed by the egress policy", got)
	}
	if n := len(env.Provider.Revocations()); n != 0 {
		t.Fatalf("the provider saw %d revocations", n)
	}
	credentialGone(t, env, tenant.ID, owner, oauthConn)
	if types := eventTypes(t, env, oauthConn); types[len(types)-1] != "connection.revocation_failed" {
		t.Fatalf("events %v", types)
	}

	if n := len(env.Provider.InternalRequests()); n != 0 {
		t.Fatalf("the internal server saw %d requests", n)
	}
	list, err := conns.ListConnections(as(t, owner), &connectionv1.ListConnectionsRequest{TenantId: tenant.ID})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(list.GetConnections()); n != 3 {
		t.Fatalf("%d connections, want the 2 to the allow-listed provider and the revoked one", n)
	}
	if _, err := conns.DeleteConnection(as(t, owner), &connectionv1.DeleteConnectionRequest{TenantId: tenant.ID, ConnectionId: oauthConn}); err != nil {
		t.Fatalf("deleting the connection whose revocation the egress policy refuses: %v", err)
	}
}
