package launch_test

import (
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	connectionv1 "github.com/bulkhead/bulkhead/gen/bulkhead/connection/v1"
	"github.com/bulkhead/bulkhead/pkg/providertest"
	"github.com/bulkhead/bulkhead/services/connection/connectiontest"
)

// TestCredentialConnections: API-key, basic and client-credentials connections are checked at
// the provider before anything is stored, and GetAccessToken hands back what works there.
func TestCredentialConnections(t *testing.T) {
	env := connectiontest.Start(t, connectiontest.Options{})
	tenant := env.NewTenant(t, "acme")
	owner := env.Identity.Token(t, tenant.OwnerKey)
	sync := env.Identity.ServiceToken(t, "sync")
	conns := env.Connections(t, 0)
	env.Provider.AddAPIKey("good-key", "acct-key")
	env.Provider.AddBasicCredentials("alice", "good-pass", "acct-basic")
	if err := env.Provider.RegisterClient("cc-client", "cc-secret", nil, []string{connectiontest.Scope}); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name, integration, user, secret string
		want                            codes.Code
		wantType                        connectionv1.AuthType
	}{
		{"api key", connectiontest.APIKey, "", "good-key", codes.OK, connectionv1.AuthType_AUTH_TYPE_API_KEY},
		{"bad api key", connectiontest.APIKey, "", "bad-key", codes.InvalidArgument, 0},
		{"basic", connectiontest.Basic, "alice", "good-pass", codes.OK, connectionv1.AuthType_AUTH_TYPE_BASIC},
		{"bad basic", connectiontest.Basic, "alice", "wrong", codes.InvalidArgument, 0},
		{"basic without user", connectiontest.Basic, "", "good-pass", codes.InvalidArgument, 0},
		{"client credentials", connectiontest.ClientCredentials, "cc-client", "cc-secret", codes.OK, connectionv1.AuthType_AUTH_TYPE_OAUTH2_CLIENT_CREDENTIALS},
		{"bad client secret", connectiontest.ClientCredentials, "cc-client", "nope", codes.InvalidArgument, 0},
		{"oauth2 integration", connectiontest.OAuthOrg, "", "x", codes.FailedPrecondition, 0},
		{"unknown integration", "no-such-thing", "", "x", codes.NotFound, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := conns.CreateCredentialConnection(as(t, owner), &connectionv1.CreateCredentialConnectionRequest{
				TenantId: tenant.ID, Integration: tc.integration, Username: tc.user, Secret: tc.secret, Tags: []string{"billing"},
			})
			wantCode(t, err, tc.want)
			if tc.want != codes.OK {
				return
			}
			c := resp.GetConnection()
			if c.GetAuthType() != tc.wantType || c.GetStatus() != connectionv1.ConnectionStatus_CONNECTION_STATUS_ACTIVE ||
				!slices.Equal(c.GetTags(), []string{"billing"}) || c.GetScope() != connectionv1.ConnectionScope_CONNECTION_SCOPE_ORG {
				t.Fatalf("connection %v", c)
			}
			tok, err := conns.GetAccessToken(viaService(t, owner, sync), &connectionv1.GetAccessTokenRequest{TenantId: tenant.ID, ConnectionId: c.GetConnectionId()})
			if err != nil {
				t.Fatal(err)
			}
			// The credential works at the provider's API.
			req, _ := http.NewRequestWithContext(testCtx(t), http.MethodGet, env.Provider.URL+providertest.PathMe, nil)
			switch tc.wantType {
			case connectionv1.AuthType_AUTH_TYPE_API_KEY:
				req.Header.Set("X-Api-Key", tok.GetAccessToken())
			case connectionv1.AuthType_AUTH_TYPE_BASIC:
				req.SetBasicAuth(tok.GetUsername(), tok.GetAccessToken())
			default:
				req.Header.Set("Authorization", "Bearer "+tok.GetAccessToken())
				if tok.GetExpireTime() == nil {
					t.Error("client credentials token without expiry")
				}
			}
			r, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			r.Body.Close()
			if r.StatusCode != http.StatusOK {
				t.Fatalf("provider answered %d to the handed-out credential", r.StatusCode)
			}
		})
	}
}

// TestCredentialIdempotency: a retried create with the same key answers with the first
// connection; the same key for another request is refused.
func TestCredentialIdempotency(t *testing.T) {
	env := connectiontest.Start(t, connectiontest.Options{})
	tenant := env.NewTenant(t, "acme")
	owner := env.Identity.Token(t, tenant.OwnerKey)
	env.Provider.AddAPIKey("good-key", "acct")
	conns := env.Connections(t, 0)
	req := &connectionv1.CreateCredentialConnectionRequest{TenantId: tenant.ID, Integration: connectiontest.APIKey, Secret: "good-key", IdempotencyKey: "create-1"}
	first, err := conns.CreateCredentialConnection(as(t, owner), req)
	if err != nil {
		t.Fatal(err)
	}
	again, err := conns.CreateCredentialConnection(as(t, owner), req)
	if err != nil || again.GetConnection().GetConnectionId() != first.GetConnection().GetConnectionId() {
		t.Fatalf("replay: %v, %v", again, err)
	}
	req.Integration = connectiontest.Basic
	req.Username = "alice"
	_, err = conns.CreateCredentialConnection(as(t, owner), req)
	wantReason(t, err, codes.AlreadyExists, "IDEMPOTENCY_KEY_REUSED")
	list, err := conns.ListConnections(as(t, owner), &connectionv1.ListConnectionsRequest{TenantId: tenant.ID})
	if err != nil || len(list.GetConnections()) != 1 {
		t.Fatalf("list after replays: %d, %v", len(list.GetConnections()), err)
	}
}

// TestAuthorizationState: the state is single-use, expires, is bound to its tenant, and a
// refusal at the provider creates nothing.
func TestAuthorizationState(t *testing.T) {
	clk := &clock{}
	env := connectiontest.Start(t, connectiontest.Options{Now: clk.now})
	tenant := env.NewTenant(t, "acme")
	other := env.NewTenant(t, "other")
	owner := env.Identity.Token(t, tenant.OwnerKey)
	conns := env.Connections(t, 0)
	start := func(t *testing.T) *connectionv1.StartAuthorizationResponse {
		t.Helper()
		resp, err := conns.StartAuthorization(as(t, owner), &connectionv1.StartAuthorizationRequest{
			TenantId: tenant.ID, Integration: connectiontest.OAuthOrg, ReturnUrl: connectiontest.ReturnURL,
		})
		if err != nil {
			t.Fatal(err)
		}
		u, _ := url.Parse(resp.GetAuthorizationUrl())
		q := u.Query()
		if q.Get("code_challenge") == "" || q.Get("code_challenge_method") != "S256" || q.Get("state") != resp.GetState() ||
			q.Get("client_id") != connectiontest.ClientID || q.Get("redirect_uri") != env.Instances[0].CallbackURL {
			t.Fatalf("authorization URL %s", u)
		}
		return resp
	}
	callback := func(t *testing.T, query url.Values) *http.Response {
		t.Helper()
		req, _ := http.NewRequestWithContext(testCtx(t), http.MethodGet, env.Instances[0].CallbackURL+"?"+query.Encode(), nil)
		client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}

	t.Run("single use", func(t *testing.T) {
		s := start(t)
		back, err := env.Provider.Approve(testCtx(t), s.GetAuthorizationUrl())
		if err != nil {
			t.Fatal(err)
		}
		if r := callback(t, back.Query()); r.StatusCode != http.StatusSeeOther || !strings.Contains(r.Header.Get("Location"), "connection_id=") {
			t.Fatalf("first callback: %d %s", r.StatusCode, r.Header.Get("Location"))
		}
		if r := callback(t, back.Query()); r.StatusCode != http.StatusBadRequest {
			t.Fatalf("replayed callback: %d", r.StatusCode)
		}
	})
	t.Run("expired", func(t *testing.T) {
		s := start(t)
		back, err := env.Provider.Approve(testCtx(t), s.GetAuthorizationUrl())
		if err != nil {
			t.Fatal(err)
		}
		clk.advance(11 * time.Minute)
		if r := callback(t, back.Query()); r.StatusCode != http.StatusBadRequest {
			t.Fatalf("expired state: %d", r.StatusCode)
		}
	})
	t.Run("bound to its tenant", func(t *testing.T) {
		s := start(t)
		back, err := env.Provider.Approve(testCtx(t), s.GetAuthorizationUrl())
		if err != nil {
			t.Fatal(err)
		}
		q := back.Query()
		// The same id and secret presented as another tenant's state.
		parts := strings.SplitN(q.Get("state"), ".", 2)
		q.Set("state", other.ID+"."+parts[1])
		if r := callback(t, q); r.StatusCode != http.StatusBadRequest {
			t.Fatalf("state moved to another tenant: %d", r.StatusCode)
		}
		// A tampered secret is refused too, and does not burn the real state.
		q.Set("state", parts[0]+"."+parts[1][:len(parts[1])-4]+"AAAA")
		if r := callback(t, q); r.StatusCode != http.StatusBadRequest {
			t.Fatalf("tampered secret: %d", r.StatusCode)
		}
		if r := callback(t, back.Query()); r.StatusCode != http.StatusSeeOther {
			t.Fatalf("the real state after attempts: %d", r.StatusCode)
		}
	})
	t.Run("denied at the provider", func(t *testing.T) {
		env.Provider.DenyNextAuthorizations(1)
		s := start(t)
		back, err := env.Provider.Approve(testCtx(t), s.GetAuthorizationUrl())
		if err != nil {
			t.Fatal(err)
		}
		r := callback(t, back.Query())
		loc, _ := url.Parse(r.Header.Get("Location"))
		if r.StatusCode != http.StatusSeeOther || loc.Query().Get("error") == "" || loc.Query().Get("reason") != "AUTHORIZATION_DENIED" {
			t.Fatalf("denied: %d %s", r.StatusCode, loc)
		}
	})
	t.Run("request checks", func(t *testing.T) {
		for name, req := range map[string]*connectionv1.StartAuthorizationRequest{
			"return url not allowed": {ReturnUrl: "https://evil.example.com/"},
			"prefix trick":           {ReturnUrl: "https://app.example.com.evil.com/"},
			"scope not allowed":      {Scopes: []string{connectiontest.ExtraScope}},
		} {
			req.TenantId, req.Integration = tenant.ID, connectiontest.OAuthOrg
			_, err := conns.StartAuthorization(as(t, owner), req)
			if code := statusCode(err); code != codes.InvalidArgument {
				t.Errorf("%s: %v", name, err)
			}
		}
		_, err := conns.StartAuthorization(as(t, owner), &connectionv1.StartAuthorizationRequest{TenantId: tenant.ID, Integration: connectiontest.APIKey})
		wantReason(t, err, codes.FailedPrecondition, "WRONG_AUTH_TYPE")
		_, err = conns.StartAuthorization(as(t, owner), &connectionv1.StartAuthorizationRequest{
			TenantId: tenant.ID, Integration: connectiontest.OAuthOrg, Scope: connectionv1.ConnectionScope_CONNECTION_SCOPE_USER,
		})
		wantReason(t, err, codes.FailedPrecondition, "CONNECTION_SCOPE_MISMATCH")
	})
	list, err := conns.ListConnections(as(t, owner), &connectionv1.ListConnectionsRequest{TenantId: tenant.ID})
	if err != nil || len(list.GetConnections()) != 2 {
		t.Fatalf("connections made: %d, %v (want the two completed flows)", len(list.GetConnections()), err)
	}
}

// TestTenantOAuthApp: a tenant's own OAuth app (client secret in the vault-broker, never
// returned) is used for its authorizations and refreshes; allowed scopes widen what its users
// may request; the connection scope override applies to new connections.
func TestTenantOAuthApp(t *testing.T) {
	clk := &clock{}
	env := connectiontest.Start(t, connectiontest.Options{Now: clk.now})
	tenant := env.NewTenant(t, "acme")
	owner := env.Identity.Token(t, tenant.OwnerKey)
	if err := env.Provider.RegisterClient("tenant-app", "tenant-secret", []string{env.Instances[0].CallbackURL},
		[]string{connectiontest.Scope, connectiontest.ExtraScope}); err != nil {
		t.Fatal(err)
	}
	ints := env.Integrations(t, 0)
	resp, err := ints.UpdateIntegrationSettings(as(t, owner), &connectionv1.UpdateIntegrationSettingsRequest{
		TenantId: tenant.ID, Integration: connectiontest.OAuthOrg,
		OauthApp:      &connectionv1.OAuthApp{ClientId: "tenant-app", ClientSecret: "tenant-secret"},
		AllowedScopes: &connectionv1.ScopeList{Scopes: []string{connectiontest.ExtraScope}},
	})
	if err != nil {
		t.Fatal(err)
	}
	s := resp.GetIntegration().GetSettings()
	if s.GetOauthClientId() != "tenant-app" || !s.GetOauthClientSecretSet() || strings.Contains(resp.String(), "tenant-secret") {
		t.Fatalf("settings %v", s)
	}
	id := env.Authorize(t, as(t, owner), 0, &connectionv1.StartAuthorizationRequest{
		TenantId: tenant.ID, Integration: connectiontest.OAuthOrg, Scopes: []string{connectiontest.ExtraScope},
	})
	clk.advance(58 * time.Minute)
	if _, err := env.Connections(t, 0).GetAccessToken(viaService(t, owner, env.Identity.ServiceToken(t, "sync")),
		&connectionv1.GetAccessTokenRequest{TenantId: tenant.ID, ConnectionId: id}); err != nil {
		t.Fatal(err)
	}
	for _, r := range env.Provider.TokenRequestLog() {
		if r.ClientID != "tenant-app" {
			t.Fatalf("token request by client %q, want the tenant's app", r.ClientID)
		}
	}
	if n := len(env.Provider.TokenRequestLog()); n != 2 {
		t.Fatalf("%d token requests, want code exchange and refresh", n)
	}
	got, err := env.Connections(t, 0).GetConnection(as(t, owner), &connectionv1.GetConnectionRequest{TenantId: tenant.ID, ConnectionId: id})
	if err != nil || !slices.Contains(got.GetConnection().GetGrantedScopes(), connectiontest.ExtraScope) {
		t.Fatalf("granted scopes: %v, %v", got.GetConnection().GetGrantedScopes(), err)
	}

	// The connection scope override: new connections of the integration are user-level.
	if _, err := ints.UpdateIntegrationSettings(as(t, owner), &connectionv1.UpdateIntegrationSettingsRequest{
		TenantId: tenant.ID, Integration: connectiontest.OAuthOrg, ConnectionScope: connectionv1.ConnectionScope_CONNECTION_SCOPE_USER,
	}); err != nil {
		t.Fatal(err)
	}
	userID := env.Authorize(t, as(t, owner), 0, &connectionv1.StartAuthorizationRequest{TenantId: tenant.ID, Integration: connectiontest.OAuthOrg})
	got, err = env.Connections(t, 0).GetConnection(as(t, owner), &connectionv1.GetConnectionRequest{TenantId: tenant.ID, ConnectionId: userID})
	if err != nil || got.GetConnection().GetScope() != connectionv1.ConnectionScope_CONNECTION_SCOPE_USER || got.GetConnection().GetOwnerUserId() != tenant.OwnerID {
		t.Fatalf("after the scope override: %v, %v", got, err)
	}
	// Clearing the app falls back to the platform's.
	resp, err = ints.UpdateIntegrationSettings(as(t, owner), &connectionv1.UpdateIntegrationSettingsRequest{
		TenantId: tenant.ID, Integration: connectiontest.OAuthOrg, ClearOauthApp: true,
	})
	if err != nil || resp.GetIntegration().GetSettings().GetOauthClientSecretSet() {
		t.Fatalf("clear: %v, %v", resp, err)
	}
	start, err := env.Connections(t, 0).StartAuthorization(as(t, owner), &connectionv1.StartAuthorizationRequest{TenantId: tenant.ID, Integration: connectiontest.OAuthOrg})
	if err != nil || !strings.Contains(start.GetAuthorizationUrl(), "client_id="+connectiontest.ClientID) {
		t.Fatalf("after clearing: %v, %v", start, err)
	}
}
