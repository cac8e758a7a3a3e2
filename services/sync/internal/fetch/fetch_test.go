package fetch_test

import (
	"errors"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/bulkhead/bulkhead/pkg/providertest"
	"github.com/bulkhead/bulkhead/services/sync/internal/definition"
	"github.com/bulkhead/bulkhead/services/sync/internal/fetch"
)

// token returns a real client-credentials access token for a client named account.
func token(t *testing.T, p *providertest.Provider, account string) string {
	t.Helper()
	if err := p.RegisterClient(account, account+"-secret", nil, []string{"records.read"}); err != nil {
		t.Fatal(err)
	}
	conf := clientcredentials.Config{ClientID: account, ClientSecret: account + "-secret", TokenURL: p.TokenURL(), AuthStyle: oauth2.AuthStyleInHeader}
	tok, err := conf.Token(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return tok.AccessToken
}

func records(t *testing.T) *definition.Definition {
	t.Helper()
	set, err := definition.Load()
	if err != nil {
		t.Fatal(err)
	}
	d, _ := set.Get("providertest", "records")
	return d
}

// TestBreakerIsPerTenant opens tenant A's breaker on the provider with failures; A's next call
// fails fast without reaching the provider, while tenant B's calls to the same provider go on.
func TestBreakerIsPerTenant(t *testing.T) {
	p := providertest.New(t, providertest.Options{})
	f, err := fetch.New(fetch.Config{Attempts: 1, BreakerFailures: 3, BreakerOpen: time.Hour, Rate: 1000, Burst: 1000})
	if err != nil {
		t.Fatal(err)
	}
	d := records(t)
	tokA, tokB := token(t, p, "a"), token(t, p, "b")
	p.FailNextAPIRequests("a", 3, 502)
	for range 3 {
		_, err := f.FetchPage(t.Context(), fetch.PageRequest{TenantID: "tenant-a", Def: d, BaseURL: p.URL, Token: tokA})
		var se *fetch.StatusError
		if !errors.As(err, &se) || se.Status != 502 {
			t.Fatalf("failing call = %v, want status 502", err)
		}
	}
	before := len(p.APIRequests())
	_, err = f.FetchPage(t.Context(), fetch.PageRequest{TenantID: "tenant-a", Def: d, BaseURL: p.URL, Token: tokA})
	var open *fetch.BreakerOpenError
	if !errors.As(err, &open) {
		t.Fatalf("call with an open breaker = %v", err)
	}
	if len(p.APIRequests()) != before {
		t.Fatal("a call reached the provider through an open breaker")
	}
	page, err := f.FetchPage(t.Context(), fetch.PageRequest{TenantID: "tenant-b", Def: d, BaseURL: p.URL, Token: tokB})
	if err != nil || len(page.Records) == 0 {
		t.Fatalf("tenant B = %d records, %v", len(page.Records), err)
	}
}

func TestRateLimits(t *testing.T) {
	p := providertest.New(t, providertest.Options{API: providertest.APIOptions{RateLimit: 1, RateLimitWindow: time.Hour}})
	f, err := fetch.New(fetch.Config{MaxInlineWait: time.Second, Rate: 1000, Burst: 1000})
	if err != nil {
		t.Fatal(err)
	}
	d := records(t)
	tok := token(t, p, "a")
	req := fetch.PageRequest{TenantID: "tenant-a", Def: d, BaseURL: p.URL, Token: tok}
	if _, err := f.FetchPage(t.Context(), req); err != nil {
		t.Fatal(err)
	}
	// The answer said X-RateLimit-Remaining: 0 until the window resets in an hour: the next call
	// does not spend a request on a certain 429.
	_, err = f.FetchPage(t.Context(), req)
	var rl *fetch.RateLimitedError
	if !errors.As(err, &rl) || rl.RetryAfter < 50*time.Minute {
		t.Fatalf("second call = %v, want a rate limit of about an hour", err)
	}
	if n := len(p.APIRequests()); n != 1 {
		t.Fatalf("%d requests reached the provider, want 1", n)
	}
	// Another tenant's bucket on the same provider is untouched (the provider's own limit is
	// per account, and this is another account).
	if _, err := f.FetchPage(t.Context(), fetch.PageRequest{TenantID: "tenant-b", Def: d, BaseURL: p.URL, Token: token(t, p, "b")}); err != nil {
		t.Fatalf("tenant B = %v", err)
	}
}
