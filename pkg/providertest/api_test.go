package providertest_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/bulkhead/bulkhead/pkg/providertest"
)

// clientToken returns a client-credentials access token for a client named account, whose
// records the API then serves.
func clientToken(t *testing.T, p *providertest.Provider, account string) string {
	t.Helper()
	if err := p.RegisterClient(account, account+"-secret", nil, scopes); err != nil {
		t.Fatal(err)
	}
	conf := clientcredentials.Config{ClientID: account, ClientSecret: account + "-secret", TokenURL: p.TokenURL(), AuthStyle: oauth2.AuthStyleInHeader}
	tok, err := conf.Token(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return tok.AccessToken
}

type page struct {
	Records    []providertest.Record `json:"records"`
	NextCursor string                `json:"next_cursor"`
}

// listAll pages through PathRecords and returns every record and the number of pages.
func listAll(t *testing.T, p *providertest.Provider, token string, q url.Values) ([]providertest.Record, int) {
	t.Helper()
	var all []providertest.Record
	for pages := 1; ; pages++ {
		status, body := apiGet(t, p.URL+providertest.PathRecords+"?"+q.Encode(), token)
		if status != http.StatusOK {
			t.Fatalf("records = %d %s", status, body)
		}
		var pg page
		if err := json.Unmarshal(body, &pg); err != nil {
			t.Fatal(err)
		}
		all = append(all, pg.Records...)
		if pg.NextCursor == "" {
			return all, pages
		}
		q.Set("cursor", pg.NextCursor)
	}
}

// listLinked pages through PathRecordsLinked following Link headers.
func listLinked(t *testing.T, p *providertest.Provider, token string) []providertest.Record {
	t.Helper()
	var all []providertest.Record
	next := p.URL + providertest.PathRecordsLinked + "?limit=4"
	for next != "" {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, next, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var recs []providertest.Record
		err = json.NewDecoder(resp.Body).Decode(&recs)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("linked = %d %v", resp.StatusCode, err)
		}
		all = append(all, recs...)
		next = ""
		if link := resp.Header.Get("Link"); link != "" {
			target, rel, ok := strings.Cut(link, ">; ")
			if !ok || rel != `rel="next"` {
				t.Fatalf("Link = %q", link)
			}
			next = strings.TrimPrefix(target, "<")
		}
	}
	return all
}

func equalRecords(a, b []providertest.Record) bool {
	return slices.EqualFunc(a, b, func(x, y providertest.Record) bool {
		return x.ID == y.ID && x.UpdatedAt.Equal(y.UpdatedAt) && maps(x.Fields, y.Fields)
	})
}

func maps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func ids(rs []providertest.Record) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.ID
	}
	return out
}

func TestRecordsPagination(t *testing.T) {
	p := newProvider(t, providertest.Options{})
	token := clientToken(t, p, "tenant-a")

	got, pages := listAll(t, p, token, url.Values{"limit": {"7"}})
	want := p.Records("tenant-a")
	if len(want) != 25 {
		t.Fatalf("seeded %d records, want 25", len(want))
	}
	if !equalRecords(got, want) {
		t.Fatalf("paged records differ from the provider's:\n got %v\nwant %v", ids(got), ids(want))
	}
	if pages != 4 {
		t.Fatalf("pages = %d, want 4 (25 records by 7)", pages)
	}
	if linked := listLinked(t, p, token); !equalRecords(linked, want) {
		t.Fatalf("Link-paged records differ:\n got %v\nwant %v", ids(linked), ids(want))
	}

	// Seeded data is the same in every run and differs between accounts.
	other := providertest.New(t, providertest.Options{})
	if !equalRecords(other.Records("tenant-a"), want) {
		t.Fatal("seeded records differ between providers")
	}
	b := p.Records("tenant-b")
	for _, r := range b {
		if slices.Contains(ids(want), r.ID) {
			t.Fatalf("record %s appears in two accounts", r.ID)
		}
	}
	tokenB := clientToken(t, p, "tenant-b")
	if gotB, _ := listAll(t, p, tokenB, url.Values{}); !equalRecords(gotB, b) {
		t.Fatal("tenant-b's listing is not tenant-b's records")
	}
}

func TestRecordsIncremental(t *testing.T) {
	p := newProvider(t, providertest.Options{API: providertest.APIOptions{SeedRecords: 5}})
	token := clientToken(t, p, "tenant-a")
	first, _ := listAll(t, p, token, url.Values{})
	high := first[len(first)-1].UpdatedAt

	updated, err := p.PutRecord("tenant-a", first[0].ID, map[string]string{"name": "renamed"})
	if err != nil {
		t.Fatal(err)
	}
	added, err := p.PutRecord("tenant-a", "new-1", map[string]string{"name": "new"})
	if err != nil {
		t.Fatal(err)
	}
	if !p.DeleteRecord("tenant-a", first[1].ID) {
		t.Fatal("delete reported a missing record")
	}
	if p.DeleteRecord("tenant-a", first[1].ID) {
		t.Fatal("second delete reported an existing record")
	}
	if !added.UpdatedAt.After(updated.UpdatedAt) || !updated.UpdatedAt.After(high) {
		t.Fatalf("mutations not ordered after the seed: %v %v %v", high, updated.UpdatedAt, added.UpdatedAt)
	}

	// updated_since is inclusive, so the newest record already seen comes back too.
	changed, _ := listAll(t, p, token, url.Values{"updated_since": {high.Format(time.RFC3339Nano)}, "limit": {"1"}})
	if got, want := ids(changed), []string{first[4].ID, first[0].ID, "new-1"}; !slices.Equal(got, want) {
		t.Fatalf("incremental = %v, want %v", got, want)
	}
	if changed[1].Fields["name"] != "renamed" {
		t.Fatalf("updated record = %+v", changed[1])
	}
	full, _ := listAll(t, p, token, url.Values{})
	if !equalRecords(full, p.Records("tenant-a")) || len(full) != 5 {
		t.Fatalf("full listing after changes = %v", ids(full))
	}
	if _, err := p.PutRecord("tenant-a", "x", map[string]string{"id": "y"}); err == nil {
		t.Fatal("PutRecord accepted a reserved field")
	}
}

func TestRecordsBadParameters(t *testing.T) {
	p := newProvider(t, providertest.Options{API: providertest.APIOptions{MaxPageSize: 5}})
	token := clientToken(t, p, "tenant-a")
	cases := []struct {
		query    string
		wantCode string
	}{
		{"limit=0", "invalid_limit"},
		{"limit=ten", "invalid_limit"},
		{"cursor=%21%21", "invalid_cursor"},
		{"cursor=bm9waXBl", "invalid_cursor"},
		{"updated_since=yesterday", "invalid_updated_since"},
	}
	for _, tc := range cases {
		t.Run(tc.query, func(t *testing.T) {
			status, body := apiGet(t, p.URL+providertest.PathRecords+"?"+tc.query, token)
			var m map[string]string
			_ = json.Unmarshal(body, &m)
			if status != http.StatusBadRequest || m["error"] != tc.wantCode {
				t.Fatalf("= %d %s, want 400 %s", status, body, tc.wantCode)
			}
		})
	}
	status, body := apiGet(t, p.URL+providertest.PathRecords+"?limit=1000", token)
	var pg page
	if err := json.Unmarshal(body, &pg); err != nil || status != http.StatusOK || len(pg.Records) != 5 {
		t.Fatalf("limit above the maximum: %d, %d records, want 5", status, len(pg.Records))
	}
}

func TestRateLimit(t *testing.T) {
	// An hour-long window cannot roll over during the test, so the outcome does not depend on time.
	p := newProvider(t, providertest.Options{API: providertest.APIOptions{RateLimit: 3, RateLimitWindow: time.Hour}})
	tokenA := clientToken(t, p, "tenant-a")
	tokenB := clientToken(t, p, "tenant-b")

	for i := range 3 {
		resp := rawGet(t, p.URL+providertest.PathMe, tokenA)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-RateLimit-Remaining") != strconv.Itoa(2-i) {
			t.Fatalf("request %d = %d remaining %q", i, resp.StatusCode, resp.Header.Get("X-RateLimit-Remaining"))
		}
	}
	resp := rawGet(t, p.URL+providertest.PathMe, tokenA)
	retry, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if resp.StatusCode != http.StatusTooManyRequests || err != nil || retry < 1 || retry > 3600 {
		t.Fatalf("4th request = %d Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	// The limit is per account.
	if resp := rawGet(t, p.URL+providertest.PathMe, tokenB); resp.StatusCode != http.StatusOK {
		t.Fatalf("other account = %d, want 200", resp.StatusCode)
	}
}

func rawGet(t *testing.T, rawURL, token string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func TestInjectedAPIFailures(t *testing.T) {
	t.Run("throttle on demand", func(t *testing.T) {
		p := newProvider(t, providertest.Options{})
		tokenA := clientToken(t, p, "tenant-a")
		tokenB := clientToken(t, p, "tenant-b")
		p.ThrottleNextAPIRequests("tenant-a", 2, 1500*time.Millisecond)
		for range 2 {
			resp := rawGet(t, p.URL+providertest.PathMe, tokenA)
			if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "2" {
				t.Fatalf("= %d Retry-After %q, want 429 and 2", resp.StatusCode, resp.Header.Get("Retry-After"))
			}
		}
		if resp := rawGet(t, p.URL+providertest.PathMe, tokenA); resp.StatusCode != http.StatusOK {
			t.Fatalf("after throttling = %d", resp.StatusCode)
		}
		if resp := rawGet(t, p.URL+providertest.PathMe, tokenB); resp.StatusCode != http.StatusOK {
			t.Fatalf("other account = %d", resp.StatusCode)
		}
	})
	t.Run("fail on demand, any account", func(t *testing.T) {
		p := newProvider(t, providertest.Options{})
		token := clientToken(t, p, "tenant-a")
		p.FailNextAPIRequests("", 1, http.StatusBadGateway)
		if resp := rawGet(t, p.URL+providertest.PathMe, token); resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("= %d, want 502", resp.StatusCode)
		}
		if resp := rawGet(t, p.URL+providertest.PathMe, token); resp.StatusCode != http.StatusOK {
			t.Fatalf("= %d, want 200", resp.StatusCode)
		}
	})
	t.Run("fail every third request", func(t *testing.T) {
		p := newProvider(t, providertest.Options{API: providertest.APIOptions{FailEvery: 3}})
		token := clientToken(t, p, "tenant-a")
		var got []int
		for range 6 {
			got = append(got, rawGet(t, p.URL+providertest.PathRecords, token).StatusCode)
		}
		if want := []int{200, 200, 503, 200, 200, 503}; !slices.Equal(got, want) {
			t.Fatalf("statuses = %v, want %v", got, want)
		}
	})
}

func TestRedirectToInternal(t *testing.T) {
	p := newProvider(t, providertest.Options{})
	token := clientToken(t, p, "tenant-a")

	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, p.URL+providertest.PathRedirect, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != p.InternalURL+providertest.PathInternal {
		t.Fatalf("= %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if n := len(p.InternalRequests()); n != 0 {
		t.Fatalf("internal reached %d times without following", n)
	}

	// A client that follows redirects reaches the internal server, and Go's client forwards the
	// Authorization header because the host name matches: what the proxy's SSRF guard must stop.
	if status, body := apiGet(t, p.URL+providertest.PathRedirect, token); status != http.StatusOK || !strings.Contains(string(body), "internal-only") {
		t.Fatalf("following = %d %s", status, body)
	}
	in := p.InternalRequests()
	if len(in) != 1 || in[0].Path != providertest.PathInternal || in[0].Authorization != "Bearer "+token {
		t.Fatalf("internal requests = %+v", in)
	}

	p.SetRedirectTarget("http://127.0.0.1:1/elsewhere")
	resp, err = noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Location"); got != "http://127.0.0.1:1/elsewhere" {
		t.Fatalf("Location = %q", got)
	}
}

func TestAPICredentials(t *testing.T) {
	p := newProvider(t, providertest.Options{})
	p.AddAPIKey("key-1", "acct-key")
	p.AddBasicCredentials("user", "pass", "acct-basic")

	cases := []struct {
		name        string
		prepare     func(*http.Request)
		wantStatus  int
		wantAccount string
		wantKind    string
	}{
		{"bearer API key", func(r *http.Request) { r.Header.Set("Authorization", "Bearer key-1") }, 200, "acct-key", providertest.KindAPIKey},
		{"X-Api-Key header", func(r *http.Request) { r.Header.Set("X-Api-Key", "key-1") }, 200, "acct-key", providertest.KindAPIKey},
		{"api_key query", func(r *http.Request) { r.URL.RawQuery = "api_key=key-1" }, 200, "acct-key", providertest.KindAPIKey},
		{"basic", func(r *http.Request) { r.SetBasicAuth("user", "pass") }, 200, "acct-basic", providertest.KindBasic},
		{"wrong key", func(r *http.Request) { r.Header.Set("X-Api-Key", "key-2") }, 401, "", ""},
		{"wrong password", func(r *http.Request) { r.SetBasicAuth("user", "nope") }, 401, "", ""},
		{"unknown bearer", func(r *http.Request) { r.Header.Set("Authorization", "Bearer nope") }, 401, "", ""},
		// A wrong Authorization header is refused even when a valid key rides along.
		{"wrong header beats good key", func(r *http.Request) {
			r.Header.Set("Authorization", "Bearer nope")
			r.Header.Set("X-Api-Key", "key-1")
		}, 401, "", ""},
		{"nothing", func(*http.Request) {}, 401, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, p.URL+providertest.PathMe, nil)
			if err != nil {
				t.Fatal(err)
			}
			tc.prepare(req)
			status, body := do(t, req)
			if status != tc.wantStatus {
				t.Fatalf("= %d %s, want %d", status, body, tc.wantStatus)
			}
			if status == http.StatusUnauthorized {
				return
			}
			var m map[string]any
			if err := json.Unmarshal(body, &m); err != nil || m["account"] != tc.wantAccount || m["auth"] != tc.wantKind {
				t.Fatalf("/api/me = %s", body)
			}
		})
	}
	log := p.APIRequests()
	if len(log) != len(cases) {
		t.Fatalf("logged %d API requests, want %d", len(log), len(cases))
	}
	if log[0].Account != "acct-key" || log[0].Status != 200 || log[4].Account != "" || log[4].Status != 401 {
		t.Fatalf("log = %+v", log)
	}
}
