package launch_test

import (
	"bytes"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	connectionv1 "github.com/bulkhead/bulkhead/gen/bulkhead/connection/v1"
	"github.com/bulkhead/bulkhead/services/connection/connectiontest"
	"github.com/bulkhead/bulkhead/services/connection/launch"
)

// syncBuffer is a log sink safe for the service's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestProxy: the owner's call reaches the provider with the credential injected; SSRF attempts
// are refused before (InvalidArgument) or during (FailedPrecondition EGRESS_REFUSED) the call
// and never reach the internal server; the credential appears neither in answers nor in logs.
func TestProxy(t *testing.T) {
	logs := &syncBuffer{}
	env := connectiontest.Start(t, connectiontest.Options{
		Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	tenant := env.NewTenant(t, "acme")
	owner := env.Identity.Token(t, tenant.OwnerKey)
	conns := env.Connections(t, 0)
	env.Provider.AddAPIKey("secret-api-key-123", "acct-proxy")
	created, err := conns.CreateCredentialConnection(as(t, owner), &connectionv1.CreateCredentialConnectionRequest{
		TenantId: tenant.ID, Integration: connectiontest.APIKey, Secret: "secret-api-key-123",
	})
	if err != nil {
		t.Fatal(err)
	}
	apiKeyConn := created.GetConnection().GetConnectionId()
	oauthConn := env.Authorize(t, as(t, owner), 0, &connectionv1.StartAuthorizationRequest{TenantId: tenant.ID, Integration: connectiontest.OAuthOrg})
	tok, err := conns.GetAccessToken(viaService(t, owner, env.Identity.ServiceToken(t, "sync")), &connectionv1.GetAccessTokenRequest{TenantId: tenant.ID, ConnectionId: oauthConn})
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{"secret-api-key-123", tok.GetAccessToken()}

	proxy := func(conn, method, path string, headers ...*connectionv1.ProxyParam) (*connectionv1.ProxyResponse, error) {
		return conns.Proxy(as(t, owner), &connectionv1.ProxyRequest{
			TenantId: tenant.ID, ConnectionId: conn, Method: method, Path: path, Headers: headers,
		})
	}
	for _, conn := range []string{apiKeyConn, oauthConn} {
		resp, err := proxy(conn, http.MethodGet, "/me", &connectionv1.ProxyParam{Name: "Accept", Value: "application/json"})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetStatus() != http.StatusOK || !strings.Contains(string(resp.GetBody()), `"account"`) {
			t.Fatalf("proxy /me: %d %s", resp.GetStatus(), resp.GetBody())
		}
		for _, s := range secrets {
			if strings.Contains(resp.String(), s) {
				t.Fatal("a credential appears in the proxy's answer")
			}
		}
	}

	env.Provider.AddAPIKey("other", "x")
	refused := []struct {
		name    string
		path    string
		headers []*connectionv1.ProxyParam
		want    codes.Code
	}{
		{"scheme-relative path", "//evil.com/x", nil, codes.InvalidArgument},
		{"user info marker", "/@127.0.0.1", nil, codes.InvalidArgument},
		{"absolute URL as path", "http://127.0.0.1/internal", nil, codes.InvalidArgument},
		{"absolute URL after slash", "/http://127.0.0.1/internal", nil, codes.OK}, // stays below the base: the provider answers 404
		{"dot segments", "/../oauth2/token", nil, codes.InvalidArgument},
		{"encoded dot segments", "/%2e%2e/internal", nil, codes.InvalidArgument},
		{"encoded slash", "/%2f%2fevil.com", nil, codes.InvalidArgument},
		{"backslash", "/\\evil.com", nil, codes.InvalidArgument},
		{"query in path", "/me?api_key=other", nil, codes.InvalidArgument},
		{"fragment", "/me#x", nil, codes.InvalidArgument},
		{"authorization header", "/me", []*connectionv1.ProxyParam{{Name: "Authorization", Value: "Bearer other"}}, codes.InvalidArgument},
		{"api key header", "/me", []*connectionv1.ProxyParam{{Name: "x-api-key", Value: "other"}}, codes.InvalidArgument},
		{"cookie", "/me", []*connectionv1.ProxyParam{{Name: "Cookie", Value: "a=b"}}, codes.InvalidArgument},
		{"host", "/me", []*connectionv1.ProxyParam{{Name: "Host", Value: "127.0.0.1"}}, codes.InvalidArgument},
		{"proxy header", "/me", []*connectionv1.ProxyParam{{Name: "Proxy-Authorization", Value: "x"}}, codes.InvalidArgument},
		{"forwarded", "/me", []*connectionv1.ProxyParam{{Name: "X-Forwarded-Host", Value: "evil"}}, codes.InvalidArgument},
		{"redirect to internal", "/redirect", nil, codes.FailedPrecondition},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := proxy(apiKeyConn, http.MethodGet, tc.path, tc.headers...)
			wantCode(t, err, tc.want)
			if tc.want == codes.OK && resp.GetStatus() == http.StatusOK {
				t.Fatalf("provider answered 200 to %s", tc.path)
			}
			if tc.want == codes.FailedPrecondition {
				wantReason(t, err, codes.FailedPrecondition, "EGRESS_REFUSED")
			}
		})
	}
	// The redirect is refused even when the provider points at a name resolving to loopback.
	env.Provider.SetRedirectTarget(strings.Replace(env.Provider.InternalURL, "127.0.0.1", "localhost", 1) + "/internal")
	_, err = proxy(apiKeyConn, http.MethodGet, "/redirect")
	wantReason(t, err, codes.FailedPrecondition, "EGRESS_REFUSED")

	if n := len(env.Provider.InternalRequests()); n != 0 {
		t.Fatalf("the internal server saw %d requests", n)
	}
	for _, req := range env.Provider.APIRequests() {
		if req.Account == "x" {
			t.Fatal("a caller-supplied credential reached the provider")
		}
	}
	for _, s := range secrets {
		if strings.Contains(logs.String(), s) {
			t.Fatal("a credential appears in the service's logs")
		}
	}
}

// TestProxyFairness: tenant A's provider failures open A's circuit for the integration — A's
// next call does not reach the provider — while tenant B's calls to the same provider go on;
// a tenant over its rate for an integration gets ResourceExhausted with RetryInfo.
func TestProxyFairness(t *testing.T) {
	env := connectiontest.Start(t, connectiontest.Options{
		Proxy: launch.ProxyOptions{Rate: 1000, Burst: 1000, BreakerFailures: 3, BreakerOpen: time.Hour},
	})
	conns := env.Connections(t, 0)
	type tenantConn struct{ owner, tenant, conn string }
	connect := func(name, key, account string) tenantConn {
		tn := env.NewTenant(t, name)
		owner := env.Identity.Token(t, tn.OwnerKey)
		env.Provider.AddAPIKey(key, account)
		c, err := conns.CreateCredentialConnection(as(t, owner), &connectionv1.CreateCredentialConnectionRequest{TenantId: tn.ID, Integration: connectiontest.APIKey, Secret: key})
		if err != nil {
			t.Fatal(err)
		}
		return tenantConn{owner, tn.ID, c.GetConnection().GetConnectionId()}
	}
	a, b := connect("a", "key-a", "acct-a"), connect("b", "key-b", "acct-b")
	call := func(tc tenantConn) (*connectionv1.ProxyResponse, error) {
		return conns.Proxy(as(t, tc.owner), &connectionv1.ProxyRequest{TenantId: tc.tenant, ConnectionId: tc.conn, Method: "GET", Path: "/me"})
	}

	env.Provider.FailNextAPIRequests("acct-a", 3, http.StatusServiceUnavailable)
	for i := range 3 {
		resp, err := call(a)
		if err != nil || resp.GetStatus() != http.StatusServiceUnavailable {
			t.Fatalf("A's call %d: %v %v, want the provider's 503", i, resp.GetStatus(), err)
		}
	}
	before := len(env.Provider.APIRequests())
	_, err := call(a)
	wantCode(t, err, codes.Unavailable)
	if n := len(env.Provider.APIRequests()); n != before {
		t.Fatalf("A's call reached the provider with A's circuit open (%d requests)", n-before)
	}
	for range 5 {
		resp, err := call(b)
		if err != nil || resp.GetStatus() != http.StatusOK {
			t.Fatalf("B's call while A's circuit is open: %v %v", resp.GetStatus(), err)
		}
	}

	// Rate: a second instance with a tiny bucket, same database and provider.
	limited := connectiontest.Start(t, connectiontest.Options{
		Broker: env.Broker, Proxy: launch.ProxyOptions{Rate: 0.001, Burst: 2},
	})
	lc := limited.Connections(t, 0)
	tn := limited.NewTenant(t, "c")
	owner := limited.Identity.Token(t, tn.OwnerKey)
	limited.Provider.AddAPIKey("key-c", "acct-c")
	c, err := lc.CreateCredentialConnection(as(t, owner), &connectionv1.CreateCredentialConnectionRequest{TenantId: tn.ID, Integration: connectiontest.APIKey, Secret: "key-c"})
	if err != nil {
		t.Fatal(err)
	}
	req := &connectionv1.ProxyRequest{TenantId: tn.ID, ConnectionId: c.GetConnection().GetConnectionId(), Method: "GET", Path: "/me"}
	for range 2 {
		if _, err := lc.Proxy(as(t, owner), req); err != nil {
			t.Fatal(err)
		}
	}
	_, err = lc.Proxy(as(t, owner), req)
	wantCode(t, err, codes.ResourceExhausted)
	var retry *errdetails.RetryInfo
	for _, d := range status.Convert(err).Details() {
		if r, ok := d.(*errdetails.RetryInfo); ok {
			retry = r
		}
	}
	if retry == nil || retry.GetRetryDelay().AsDuration() <= 0 {
		t.Fatalf("no RetryInfo in %v", err)
	}
}
