package launch_test

import (
	"slices"
	"testing"

	connectionv1 "github.com/bulkhead/bulkhead/gen/bulkhead/connection/v1"
	"github.com/bulkhead/bulkhead/pkg/providertest"
)

// apiStatuses lists the provider API's answers, in order.
func apiStatuses(p *providertest.Provider) []int {
	var out []int
	for _, r := range p.APIRequests() {
		out = append(out, r.Status)
	}
	return out
}

// TestProxyRefreshesOn401: a provider 401 on a token Bulkhead still thinks valid causes one
// forced refresh and one retry with the new token; when the provider refuses the new token
// too, Proxy answers the 401 after that single retry (no loop, no second refresh).
func TestProxyRefreshesOn401(t *testing.T) {
	f := newOAuthFixture(t, providertest.Options{}, 1)
	proxy := func() *connectionv1.ProxyResponse {
		t.Helper()
		resp, err := f.env.Connections(t, 0).Proxy(as(t, f.owner), &connectionv1.ProxyRequest{
			TenantId: f.tenant.ID, ConnectionId: f.connID, Method: "GET", Path: "/me", // the base URL ends in /api
		})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	before := f.get(t).GetHealth().GetLastRefreshTime().AsTime()

	f.env.Provider.FailNextAPIRequests("", 1, 401)
	if resp := proxy(); resp.GetStatus() != 200 {
		t.Fatalf("proxy after one 401: status %d", resp.GetStatus())
	}
	if got := apiStatuses(f.env.Provider); !slices.Equal(got, []int{401, 200}) {
		t.Fatalf("provider API answers %v, want 401 then 200", got)
	}
	if n := f.env.Provider.TokenRequests(providertest.GrantRefreshToken); n != 1 {
		t.Fatalf("%d refresh requests, want 1", n)
	}
	if after := f.get(t).GetHealth().GetLastRefreshTime().AsTime(); !after.After(before) {
		t.Fatalf("last refresh %v, was %v: no refresh was recorded", after, before)
	}

	f.env.Provider.FailNextAPIRequests("", 2, 401)
	if resp := proxy(); resp.GetStatus() != 401 {
		t.Fatalf("proxy when the provider refuses the refreshed token too: status %d, want the provider's 401", resp.GetStatus())
	}
	if got := apiStatuses(f.env.Provider); !slices.Equal(got, []int{401, 200, 401, 401}) {
		t.Fatalf("provider API answers %v, want exactly one retry", got)
	}
	if n := f.env.Provider.TokenRequests(providertest.GrantRefreshToken); n != 2 {
		t.Fatalf("%d refresh requests, want 2 (one per 401ed call)", n)
	}
}
