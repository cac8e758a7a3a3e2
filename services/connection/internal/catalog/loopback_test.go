package catalog_test

import (
	"net/http"
	"net/url"
	"slices"
	"testing"

	"go.uber.org/goleak"
	"golang.org/x/oauth2"

	"github.com/bulkhead/bulkhead/pkg/providertest"
	"github.com/bulkhead/bulkhead/services/connection/internal/catalog"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// oauthEntry describes a providertest server as a catalog entry, the way the connection
// service's tests will.
func oauthEntry(p *providertest.Provider) catalog.Provider {
	return catalog.Provider{
		Key:                    "providertest",
		DisplayName:            "Test provider",
		AuthType:               catalog.AuthOAuth2AuthorizationCode,
		DefaultConnectionScope: catalog.ScopeUser,
		OAuth2: &catalog.OAuth2{
			AuthorizationURL:     p.AuthURL(),
			TokenURL:             p.TokenURL(),
			RevocationURL:        p.RevocationURL(),
			RevocationStyle:      catalog.RevocationRFC7009,
			TokenAuthMethod:      catalog.TokenAuthBasic,
			DefaultScopes:        []string{"records.read"},
			AccessTokenExpires:   true,
			RefreshTokenRotation: true,
		},
		API: catalog.API{
			BaseURLs:     []string{p.URL + "/api"},
			TestEndpoint: &catalog.TestEndpoint{Method: http.MethodGet, Path: "/me", ExpectedStatus: http.StatusOK},
		},
	}
}

func loopbackCatalog(t *testing.T) *catalog.Catalog {
	t.Helper()
	c, err := catalog.Parse(catalog.Embedded(), catalog.AllowLoopback())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestLoopbackProviderNeedsTheOption(t *testing.T) {
	p := providertest.New(t, providertest.Options{})
	strict, err := catalog.Load()
	if err != nil {
		t.Fatal(err)
	}
	_, err = strict.With(oauthEntry(p))
	for _, field := range []string{"oauth2.authorization_url", "oauth2.token_url", "oauth2.revocation_url", "api.base_urls[0]"} {
		if !hasProblem(err, "providertest", field) {
			t.Errorf("strict catalog accepted loopback %s: %v", field, err)
		}
	}
	if _, err := catalog.New().With(oauthEntry(p)); err == nil {
		t.Error("catalog.New() without AllowLoopback accepted a loopback provider")
	}
}

func TestLoopbackOAuthProviderEndToEnd(t *testing.T) {
	p := providertest.New(t, providertest.Options{})
	const redirect = "http://127.0.0.1:9/callback"
	if err := p.RegisterClient("tenant-app", "tenant-secret", []string{redirect}, []string{"records.read"}); err != nil {
		t.Fatal(err)
	}
	c, err := loopbackCatalog(t).With(oauthEntry(p))
	if err != nil {
		t.Fatal(err)
	}
	entry, _ := c.Get("providertest")
	e, err := entry.Resolve(nil)
	if err != nil {
		t.Fatal(err)
	}
	if e.Scheme != "http" || e.TokenURL != p.TokenURL() || e.TestURL != p.URL+providertest.PathMe {
		t.Fatalf("endpoints = %+v", e)
	}
	if want := []string{p.URL[len("http://"):]}; !slices.Equal(e.AllowedHosts, want) {
		t.Fatalf("allowed hosts = %v, want %v", e.AllowedHosts, want)
	}
	// The internal server shares the host but not the port: not a proxy target.
	internal, _ := url.Parse(p.InternalURL + providertest.PathInternal)
	if e.AllowsURL(internal) {
		t.Fatal("the internal server is an allowed proxy target")
	}

	// The catalog's endpoints drive a real authorization-code flow with PKCE.
	conf := &oauth2.Config{
		ClientID:     "tenant-app",
		ClientSecret: "tenant-secret",
		Endpoint:     oauth2.Endpoint{AuthURL: e.AuthorizationURL, TokenURL: e.TokenURL, AuthStyle: oauth2.AuthStyleInHeader},
		RedirectURL:  redirect,
		Scopes:       entry.OAuth2.DefaultScopes,
	}
	verifier := oauth2.GenerateVerifier()
	var opts []oauth2.AuthCodeOption
	if entry.OAuth2.UsesPKCE() {
		opts = append(opts, oauth2.S256ChallengeOption(verifier))
	}
	loc, err := p.Approve(t.Context(), conf.AuthCodeURL("state-0123456789", opts...))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := conf.Exchange(t.Context(), loc.Query().Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	testURL, _ := url.Parse(e.TestURL)
	if !e.AllowsURL(testURL) {
		t.Fatalf("test URL %s not allowed", e.TestURL)
	}
	status := apiCall(t, e.TestURL, func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok.AccessToken) })
	if status != entry.API.TestEndpoint.ExpectedStatus {
		t.Fatalf("test endpoint = %d, want %d", status, entry.API.TestEndpoint.ExpectedStatus)
	}
}

func TestLoopbackAPIKeyProvider(t *testing.T) {
	p := providertest.New(t, providertest.Options{})
	p.AddAPIKey("good-key", "tenant-a")
	entry := catalog.Provider{
		Key:                    "providertest-key",
		DisplayName:            "Test provider (API key)",
		AuthType:               catalog.AuthAPIKey,
		DefaultConnectionScope: catalog.ScopeOrg,
		APIKey:                 &catalog.APIKey{In: catalog.APIKeyInHeader, Name: "X-Api-Key"},
		API: catalog.API{
			BaseURLs:     []string{p.URL + "/api"},
			TestEndpoint: &catalog.TestEndpoint{Method: http.MethodGet, Path: "/me", ExpectedStatus: http.StatusOK},
		},
	}
	c, err := loopbackCatalog(t).With(entry)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := c.Get("providertest-key")
	e, err := got.Resolve(nil)
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]bool{"good-key": true, "bad-key": false} {
		status := apiCall(t, e.TestURL, func(r *http.Request) { r.Header.Set(got.APIKey.Name, got.APIKey.Prefix+key) })
		if ok := status == got.API.TestEndpoint.ExpectedStatus; ok != want {
			t.Errorf("key %s: test endpoint = %d, valid = %v, want %v", key, status, ok, want)
		}
	}
}

func apiCall(t *testing.T, rawURL string, prepare func(*http.Request)) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	prepare(req)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
