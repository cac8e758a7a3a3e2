package catalog_test

import (
	"errors"
	"net/url"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/bulkhead/bulkhead/services/connection/internal/catalog"
)

// sampleFields are valid values for every field the shipped catalog declares.
var sampleFields = map[string]string{
	"subdomain": "acme",
	"shop":      "acme-store",
	"my_domain": "acme",
	"site":      "acme",
	"domain":    "acme",
	"dc":        "us21",
	"tenant":    "contoso.onmicrosoft.com",
	"cloud_id":  "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
	"realm_id":  "4620816365178043860",
}

func TestShippedCatalog(t *testing.T) {
	c, err := catalog.Load()
	if err != nil {
		t.Fatalf("embedded catalog: %v", err)
	}
	if c.Len() < 20 {
		t.Fatalf("catalog has %d providers, want at least 20", c.Len())
	}
	for _, key := range []string{
		"github", "slack", "google-workspace", "microsoft-365", "salesforce", "hubspot", "notion",
		"zendesk", "jira", "linear", "asana", "intercom", "stripe", "shopify", "quickbooks", "xero",
		"zoom", "dropbox", "airtable", "pipedrive",
	} {
		if _, ok := c.Get(key); !ok {
			t.Errorf("provider %q missing", key)
		}
	}

	authTypes := map[catalog.AuthType]bool{}
	scopes := map[catalog.ConnectionScope]bool{}
	list := c.List()
	if !slices.IsSortedFunc(list, func(a, b *catalog.Provider) int { return strings.Compare(a.Key, b.Key) }) {
		t.Error("List is not ordered by key")
	}
	for _, p := range list {
		authTypes[p.AuthType] = true
		scopes[p.DefaultConnectionScope] = true
		fields := map[string]string{}
		for _, f := range p.Fields {
			if v, ok := sampleFields[f.Name]; ok {
				fields[f.Name] = v
			}
		}
		e, err := p.Resolve(fields)
		if err != nil {
			t.Errorf("%s: resolve: %v", p.Key, err)
			continue
		}
		urls := append([]string{e.AuthorizationURL, e.TokenURL, e.RevocationURL, e.TestURL}, e.BaseURLs...)
		for _, u := range urls {
			if u == "" {
				continue
			}
			parsed, err := url.Parse(u)
			if err != nil || parsed.Scheme != "https" || strings.ContainsAny(u, "{}") {
				t.Errorf("%s: URL %q is not a rendered https URL", p.Key, u)
			}
		}
		for _, b := range e.BaseURLs {
			if u, _ := url.Parse(b); !e.AllowsURL(u.JoinPath("x")) {
				t.Errorf("%s: base URL %s is not an allowed proxy target", p.Key, b)
			}
		}
		if p.AuthType == catalog.AuthOAuth2AuthorizationCode && e.AuthorizationURL == "" {
			t.Errorf("%s: no authorization URL", p.Key)
		}
	}
	for _, at := range []catalog.AuthType{catalog.AuthOAuth2AuthorizationCode, catalog.AuthOAuth2ClientCredentials, catalog.AuthAPIKey, catalog.AuthBasic} {
		if !authTypes[at] {
			t.Errorf("no provider with auth type %s", at)
		}
	}
	if !scopes[catalog.ScopeOrg] || !scopes[catalog.ScopeUser] {
		t.Errorf("connection scopes used: %v, want both org and user", scopes)
	}

	// Test catalogs start from the same data.
	if lc, err := catalog.Parse(catalog.Embedded(), catalog.AllowLoopback()); err != nil || lc.Len() != c.Len() {
		t.Fatalf("embedded catalog with AllowLoopback: %v", err)
	}
}

func TestShippedProviderDetails(t *testing.T) {
	c, err := catalog.Load()
	if err != nil {
		t.Fatal(err)
	}
	google, _ := c.Get("google-workspace")
	if google.OAuth2.AuthorizationParams["access_type"] != "offline" || google.OAuth2.AuthorizationParams["prompt"] != "consent" {
		t.Errorf("google authorization params = %v", google.OAuth2.AuthorizationParams)
	}
	slack, _ := c.Get("slack")
	if got := slack.OAuth2.JoinScopes([]string{"a", "b"}); got != "a,b" {
		t.Errorf("slack JoinScopes = %q", got)
	}
	if got := google.OAuth2.JoinScopes([]string{"a", "b"}); got != "a b" {
		t.Errorf("google JoinScopes = %q", got)
	}
	stripe, _ := c.Get("stripe")
	if stripe.APIKey == nil || stripe.APIKey.Name != "Authorization" || stripe.APIKey.Prefix != "Bearer " {
		t.Errorf("stripe api key = %+v", stripe.APIKey)
	}
	e, err := stripe.Resolve(nil)
	if err != nil || e.TestURL != "https://api.stripe.com/v1/balance" {
		t.Errorf("stripe test URL = %q (%v)", e.TestURL, err)
	}
	ms, _ := c.Get("microsoft-365")
	e, err = ms.Resolve(nil)
	if err != nil || e.TokenURL != "https://login.microsoftonline.com/common/oauth2/v2.0/token" || e.Fields["tenant"] != "common" {
		t.Errorf("microsoft-365 default tenant: %+v (%v)", e, err)
	}
	xero, _ := c.Get("xero")
	if xero.OAuth2.RefreshTokenLifetime.Hours() != 60*24 {
		t.Errorf("xero refresh token lifetime = %v", xero.OAuth2.RefreshTokenLifetime)
	}
	sf, _ := c.Get("salesforce")
	if sf.OAuth2.AssumedAccessTokenLifetime.Hours() != 2 {
		t.Errorf("salesforce assumed lifetime = %v", sf.OAuth2.AssumedAccessTokenLifetime)
	}

	// Get returns a copy: changing it does not change the catalog.
	sf.API.BaseURLs[0] = "https://evil.example.com"
	sf.OAuth2.DefaultScopes[0] = "everything"
	again, _ := c.Get("salesforce")
	if again.API.BaseURLs[0] == "https://evil.example.com" || again.OAuth2.DefaultScopes[0] == "everything" {
		t.Fatal("Get exposed the catalog's own provider")
	}
}

// validProvider is a correct entry that each broken case changes in one place.
func validProvider() catalog.Provider {
	return catalog.Provider{
		Key:                    "example",
		DisplayName:            "Example",
		AuthType:               catalog.AuthOAuth2AuthorizationCode,
		DefaultConnectionScope: catalog.ScopeOrg,
		Fields: []catalog.Field{
			{Name: "subdomain", Required: true, Pattern: `^[a-z0-9-]{1,63}$`},
			{Name: "region", Pattern: `^(us|eu)$`},
		},
		OAuth2: &catalog.OAuth2{
			AuthorizationURL: "https://{subdomain}.example.com/oauth/authorize",
			TokenURL:         "https://{subdomain}.example.com/oauth/token",
			RevocationURL:    "https://{subdomain}.example.com/oauth/revoke",
			RevocationStyle:  catalog.RevocationRFC7009,
			DefaultScopes:    []string{"read"},
		},
		API: catalog.API{
			BaseURLs:     []string{"https://{subdomain}.example.com/api"},
			AllowedHosts: []string{"files.example.com"},
			TestEndpoint: &catalog.TestEndpoint{Method: "GET", Path: "/me", ExpectedStatus: 200},
		},
	}
}

func marshal(t *testing.T, ps ...catalog.Provider) []byte {
	t.Helper()
	b, err := yaml.Marshal(map[string]any{"providers": ps})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// validationErrors flattens a joined error into its ValidationErrors.
func validationErrors(err error) []*catalog.ValidationError {
	var out []*catalog.ValidationError
	var walk func(error)
	walk = func(e error) {
		var ve *catalog.ValidationError
		if errors.As(e, &ve) && ve == e {
			out = append(out, ve)
			return
		}
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
		}
	}
	walk(err)
	return out
}

func hasProblem(err error, provider, field string) bool {
	return slices.ContainsFunc(validationErrors(err), func(ve *catalog.ValidationError) bool {
		return ve.Provider == provider && ve.Field == field
	})
}

func TestParseValidEntry(t *testing.T) {
	c, err := catalog.Parse(marshal(t, validProvider()))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Get("example"); !ok || c.Len() != 1 {
		t.Fatal("example provider missing")
	}
}

func TestParseRejectsBrokenEntries(t *testing.T) {
	cases := []struct {
		name      string
		loopback  bool
		mutate    func(p *catalog.Provider)
		wantField string
		// wantProvider defaults to "example".
		wantProvider string
	}{
		{name: "missing key", mutate: func(p *catalog.Provider) { p.Key = "" }, wantField: "key", wantProvider: "#0"},
		{name: "key with spaces", mutate: func(p *catalog.Provider) { p.Key = "Ex ample" }, wantField: "key", wantProvider: "Ex ample"},
		{name: "missing display name", mutate: func(p *catalog.Provider) { p.DisplayName = " " }, wantField: "display_name"},
		{name: "unknown auth type", mutate: func(p *catalog.Provider) { p.AuthType = "oauth1" }, wantField: "auth_type"},
		{name: "unknown connection scope", mutate: func(p *catalog.Provider) { p.DefaultConnectionScope = "team" }, wantField: "default_connection_scope"},
		{name: "missing connection scope", mutate: func(p *catalog.Provider) { p.DefaultConnectionScope = "" }, wantField: "default_connection_scope"},

		// URLs.
		{name: "http token URL", mutate: func(p *catalog.Provider) { p.OAuth2.TokenURL = "http://api.example.com/token" }, wantField: "oauth2.token_url"},
		{name: "missing token URL", mutate: func(p *catalog.Provider) { p.OAuth2.TokenURL = "" }, wantField: "oauth2.token_url"},
		{name: "missing authorization URL", mutate: func(p *catalog.Provider) { p.OAuth2.AuthorizationURL = "" }, wantField: "oauth2.authorization_url"},
		{name: "relative authorization URL", mutate: func(p *catalog.Provider) { p.OAuth2.AuthorizationURL = "/oauth/authorize" }, wantField: "oauth2.authorization_url"},
		{name: "IP address host", mutate: func(p *catalog.Provider) { p.OAuth2.TokenURL = "https://10.0.0.1/token" }, wantField: "oauth2.token_url"},
		{name: "loopback host without the option", mutate: func(p *catalog.Provider) { p.OAuth2.TokenURL = "https://127.0.0.1:8443/token" }, wantField: "oauth2.token_url"},
		{name: "localhost", mutate: func(p *catalog.Provider) { p.API.BaseURLs = []string{"https://localhost/api"} }, wantField: "api.base_urls[0]"},
		{name: "http non-loopback even with the option", loopback: true, mutate: func(p *catalog.Provider) { p.OAuth2.TokenURL = "http://api.example.com/token" }, wantField: "oauth2.token_url"},
		{name: "private IP even with the option", loopback: true, mutate: func(p *catalog.Provider) { p.OAuth2.TokenURL = "https://10.0.0.1/token" }, wantField: "oauth2.token_url"},
		{name: "upper-case host", mutate: func(p *catalog.Provider) { p.OAuth2.TokenURL = "https://API.example.com/token" }, wantField: "oauth2.token_url"},
		{name: "single-label host", mutate: func(p *catalog.Provider) { p.API.BaseURLs = []string{"https://intranet/api"} }, wantField: "api.base_urls[0]"},
		{name: "user info", mutate: func(p *catalog.Provider) { p.API.BaseURLs = []string{"https://user@api.example.com"} }, wantField: "api.base_urls[0]"},
		{name: "query in base URL", mutate: func(p *catalog.Provider) { p.API.BaseURLs = []string{"https://api.example.com/?x=1"} }, wantField: "api.base_urls[0]"},
		{name: "no base URLs", mutate: func(p *catalog.Provider) { p.API.BaseURLs = nil }, wantField: "api.base_urls"},
		{name: "mixed schemes", loopback: true, mutate: func(p *catalog.Provider) {
			p.API.BaseURLs = []string{"https://api.example.com", "http://127.0.0.1:8080"}
		}, wantField: "api.base_urls[1]"},

		// Templates.
		{name: "undeclared field", mutate: func(p *catalog.Provider) { p.OAuth2.TokenURL = "https://{tenant}.example.com/token" }, wantField: "oauth2.token_url"},
		{name: "optional field without default in template", mutate: func(p *catalog.Provider) {
			p.API.BaseURLs = []string{"https://{region}.api.example.com"}
		}, wantField: "api.base_urls[0]"},
		{name: "whole host from a field", mutate: func(p *catalog.Provider) { p.API.BaseURLs = []string{"https://{subdomain}/api"} }, wantField: "api.base_urls[0]"},
		{name: "host ends in one label", mutate: func(p *catalog.Provider) { p.API.BaseURLs = []string{"https://{subdomain}.com/api"} }, wantField: "api.base_urls[0]"},
		{name: "field in the port", mutate: func(p *catalog.Provider) { p.API.BaseURLs = []string{"https://api.example.com:{subdomain}/api"} }, wantField: "api.base_urls[0]"},
		{name: "field in the scheme", mutate: func(p *catalog.Provider) { p.API.BaseURLs = []string{"{subdomain}://api.example.com"} }, wantField: "api.base_urls[0]"},
		{name: "unclosed placeholder", mutate: func(p *catalog.Provider) { p.OAuth2.TokenURL = "https://{subdomain.example.com/token" }, wantField: "oauth2.token_url"},
		{name: "stray brace", mutate: func(p *catalog.Provider) { p.OAuth2.TokenURL = "https://api.example.com/}token" }, wantField: "oauth2.token_url"},
		{name: "placeholder not a field name", mutate: func(p *catalog.Provider) { p.OAuth2.TokenURL = "https://{Sub Domain}.example.com/token" }, wantField: "oauth2.token_url"},

		// Fields.
		{name: "pattern does not compile", mutate: func(p *catalog.Provider) { p.Fields[0].Pattern = `^[a-$` }, wantField: "connection_fields[0].pattern"},
		{name: "unanchored pattern", mutate: func(p *catalog.Provider) { p.Fields[0].Pattern = `[a-z]+` }, wantField: "connection_fields[0].pattern"},
		{name: "missing pattern", mutate: func(p *catalog.Provider) { p.Fields[1].Pattern = "" }, wantField: "connection_fields[1].pattern"},
		{name: "bad field name", mutate: func(p *catalog.Provider) { p.Fields[1].Name = "Region-Name" }, wantField: "connection_fields[1].name"},
		{name: "duplicate field", mutate: func(p *catalog.Provider) { p.Fields[1].Name = "subdomain" }, wantField: "connection_fields[1].name"},
		{name: "default fails pattern", mutate: func(p *catalog.Provider) { p.Fields[1].Default = "ap" }, wantField: "connection_fields[1].default"},
		{name: "default with a slash", mutate: func(p *catalog.Provider) {
			p.Fields[1].Pattern = `^.+$`
			p.Fields[1].Default = "evil.com/"
		}, wantField: "connection_fields[1].default"},

		// Auth settings.
		{name: "oauth2 block missing", mutate: func(p *catalog.Provider) { p.OAuth2 = nil }, wantField: "oauth2"},
		{name: "api_key block on oauth2", mutate: func(p *catalog.Provider) { p.APIKey = &catalog.APIKey{In: "header", Name: "X-Key"} }, wantField: "api_key"},
		{name: "authorization URL on client credentials", mutate: func(p *catalog.Provider) { p.AuthType = catalog.AuthOAuth2ClientCredentials }, wantField: "oauth2.authorization_url"},
		{name: "revocation URL without style", mutate: func(p *catalog.Provider) { p.OAuth2.RevocationStyle = "" }, wantField: "oauth2.revocation_style"},
		{name: "revocation style without URL", mutate: func(p *catalog.Provider) { p.OAuth2.RevocationURL = "" }, wantField: "oauth2.revocation_style"},
		{name: "unknown revocation style", mutate: func(p *catalog.Provider) { p.OAuth2.RevocationStyle = "delete" }, wantField: "oauth2.revocation_style"},
		{name: "unknown token auth method", mutate: func(p *catalog.Provider) { p.OAuth2.TokenAuthMethod = "private_key_jwt" }, wantField: "oauth2.token_auth_method"},
		{name: "unknown scope separator", mutate: func(p *catalog.Provider) { p.OAuth2.ScopeSeparator = ";" }, wantField: "oauth2.scope_separator"},
		{name: "scope containing the separator", mutate: func(p *catalog.Provider) { p.OAuth2.DefaultScopes = []string{"read write"} }, wantField: "oauth2.default_scopes[0]"},
		{name: "reserved authorization parameter", mutate: func(p *catalog.Provider) {
			p.OAuth2.AuthorizationParams = map[string]string{"redirect_uri": "https://evil.example.com"}
		}, wantField: "oauth2.authorization_params.redirect_uri"},
		{name: "assumed lifetime on non-expiring tokens", mutate: func(p *catalog.Provider) { p.OAuth2.AssumedAccessTokenLifetime = 3600e9 }, wantField: "oauth2.assumed_access_token_lifetime"},
		{name: "negative refresh token lifetime", mutate: func(p *catalog.Provider) { p.OAuth2.RefreshTokenLifetime = -1 }, wantField: "oauth2.refresh_token_lifetime"},
		{name: "refresh token lifetime on client credentials", mutate: func(p *catalog.Provider) {
			p.AuthType, p.OAuth2.AuthorizationURL = catalog.AuthOAuth2ClientCredentials, ""
			p.OAuth2.RefreshTokenLifetime = 3600e9
		}, wantField: "oauth2.refresh_token_lifetime"},
		{name: "api key without block", mutate: func(p *catalog.Provider) {
			p.AuthType = catalog.AuthAPIKey
			p.OAuth2 = nil
		}, wantField: "api_key"},
		{name: "api key with oauth2 block", mutate: func(p *catalog.Provider) {
			p.AuthType = catalog.AuthAPIKey
			p.APIKey = &catalog.APIKey{In: "header", Name: "X-Key"}
		}, wantField: "oauth2"},
		{name: "api key in a cookie", mutate: func(p *catalog.Provider) {
			p.AuthType, p.OAuth2 = catalog.AuthAPIKey, nil
			p.APIKey = &catalog.APIKey{In: "cookie", Name: "key"}
		}, wantField: "api_key.in"},
		{name: "api key header name with a colon", mutate: func(p *catalog.Provider) {
			p.AuthType, p.OAuth2 = catalog.AuthAPIKey, nil
			p.APIKey = &catalog.APIKey{In: "header", Name: "X-Key: x"}
		}, wantField: "api_key.name"},
		{name: "query api key with a prefix", mutate: func(p *catalog.Provider) {
			p.AuthType, p.OAuth2 = catalog.AuthAPIKey, nil
			p.APIKey = &catalog.APIKey{In: "query", Name: "key", Prefix: "Bearer "}
		}, wantField: "api_key.prefix"},
		{name: "basic with an api_key block", mutate: func(p *catalog.Provider) {
			p.AuthType, p.OAuth2 = catalog.AuthBasic, nil
			p.APIKey = &catalog.APIKey{In: "header", Name: "X-Key"}
		}, wantField: "api_key"},

		// API settings.
		{name: "allowed host with a path", mutate: func(p *catalog.Provider) { p.API.AllowedHosts = []string{"files.example.com/x"} }, wantField: "api.allowed_hosts[0]"},
		{name: "allowed host with a scheme", mutate: func(p *catalog.Provider) { p.API.AllowedHosts = []string{"https://files.example.com"} }, wantField: "api.allowed_hosts[0]"},
		{name: "allowed host is an IP", mutate: func(p *catalog.Provider) { p.API.AllowedHosts = []string{"169.254.169.254"} }, wantField: "api.allowed_hosts[0]"},
		{name: "allowed host with user info", mutate: func(p *catalog.Provider) { p.API.AllowedHosts = []string{"a@files.example.com"} }, wantField: "api.allowed_hosts[0]"},
		{name: "default Authorization header", mutate: func(p *catalog.Provider) {
			p.API.DefaultHeaders = map[string]string{"authorization": "Bearer x"}
		}, wantField: "api.default_headers.authorization"},
		{name: "header value with a line break", mutate: func(p *catalog.Provider) {
			p.API.DefaultHeaders = map[string]string{"X-Version": "1\r\nX-Evil: 1"}
		}, wantField: "api.default_headers.X-Version"},
		{name: "test endpoint with a host", mutate: func(p *catalog.Provider) { p.API.TestEndpoint.Path = "//evil.example.com/me" }, wantField: "api.test_endpoint.path"},
		{name: "test endpoint with dot segments", mutate: func(p *catalog.Provider) { p.API.TestEndpoint.Path = "/../admin" }, wantField: "api.test_endpoint.path"},
		{name: "test endpoint method", mutate: func(p *catalog.Provider) { p.API.TestEndpoint.Method = "DELETE" }, wantField: "api.test_endpoint.method"},
		{name: "test endpoint status", mutate: func(p *catalog.Provider) { p.API.TestEndpoint.ExpectedStatus = 0 }, wantField: "api.test_endpoint.expected_status"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := validProvider()
			tc.mutate(&p)
			var opts []catalog.Option
			if tc.loopback {
				opts = append(opts, catalog.AllowLoopback())
			}
			_, err := catalog.Parse(marshal(t, p), opts...)
			want := tc.wantProvider
			if want == "" {
				want = "example"
			}
			if !hasProblem(err, want, tc.wantField) {
				t.Fatalf("want a problem with %s of %s, got: %v", tc.wantField, want, err)
			}
		})
	}
}

func TestParseReportsEveryProblem(t *testing.T) {
	a := validProvider()
	a.OAuth2.TokenURL = "http://api.example.com/token"
	a.DefaultConnectionScope = "everyone"
	b := validProvider()
	b.Key = "second"
	b.API.BaseURLs = nil
	_, err := catalog.Parse(marshal(t, a, b))
	for _, want := range [][2]string{{"example", "oauth2.token_url"}, {"example", "default_connection_scope"}, {"second", "api.base_urls"}} {
		if !hasProblem(err, want[0], want[1]) {
			t.Errorf("missing problem %v in: %v", want, err)
		}
	}
	if !strings.Contains(err.Error(), `provider "second": api.base_urls`) {
		t.Errorf("message does not name provider and field: %v", err)
	}
}

func TestParseRejectsBrokenDocuments(t *testing.T) {
	dup := validProvider()
	cases := []struct {
		name string
		data []byte
	}{
		{"empty", []byte("")},
		{"no providers", []byte("providers: []\n")},
		{"not YAML", []byte("providers: [\n")},
		{"unknown setting", []byte("providers:\n  - key: x\n    display_name: X\n    auth_typo: basic\n")},
		{"two documents", append(marshal(t, validProvider()), []byte("---\nproviders: []\n")...)},
		{"duplicate provider key", marshal(t, validProvider(), dup)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if c, err := catalog.Parse(tc.data); err == nil {
				t.Fatalf("parsed into %d providers", c.Len())
			}
		})
	}
	_, err := catalog.Parse(marshal(t, validProvider(), dup))
	if !hasProblem(err, "example", "key") {
		t.Fatalf("duplicate key not reported as a key problem: %v", err)
	}
}

func TestWith(t *testing.T) {
	base, err := catalog.Load()
	if err != nil {
		t.Fatal(err)
	}
	p := validProvider()
	c, err := base.With(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Len() != base.Len()+1 {
		t.Fatalf("len = %d, want %d", c.Len(), base.Len()+1)
	}
	if _, ok := base.Get("example"); ok {
		t.Fatal("With changed the original catalog")
	}
	if _, err := c.With(p); !hasProblem(err, "example", "key") {
		t.Fatalf("adding a duplicate: %v", err)
	}
	broken := validProvider()
	broken.Key = "broken"
	broken.OAuth2.TokenURL = "ftp://example.com"
	if _, err := base.With(broken); !hasProblem(err, "broken", "oauth2.token_url") {
		t.Fatalf("adding a broken provider: %v", err)
	}
	// Changing the value passed to With afterwards does not reach the catalog.
	p.API.BaseURLs[0] = "https://evil.example.com"
	got, _ := c.Get("example")
	if got.API.BaseURLs[0] != "https://{subdomain}.example.com/api" {
		t.Fatalf("catalog shares the caller's slice: %v", got.API.BaseURLs)
	}
}
