package launch_test

import (
	"context"
	"slices"
	"testing"
	"time"

	connectionv1 "github.com/bulkhead/bulkhead/gen/bulkhead/connection/v1"
	brokerv1 "github.com/bulkhead/bulkhead/gen/bulkhead/vaultbroker/v1"
	"github.com/bulkhead/bulkhead/pkg/grpcclient"
	"github.com/bulkhead/bulkhead/pkg/providertest"
	"github.com/bulkhead/bulkhead/services/connection/connectiontest"
)

// BenchmarkGetAccessToken measures GetAccessToken on a fresh token (the fast path: one row
// read and one broker read, no provider call) against the vault-broker's GetCredential alone,
// each call timed in the same loop so machine noise hits both alike. Reported: p50/p99 of each
// and the ratio of the means (getaccesstoken/getcredential).
func BenchmarkGetAccessToken(b *testing.B) {
	env := connectiontest.Start(b, connectiontest.Options{})
	tenant := env.NewTenant(b, "bench")
	owner := env.Identity.Token(b, tenant.OwnerKey)
	sync := env.Identity.ServiceToken(b, "sync")
	ctx := context.Background()
	id := env.Authorize(b, withToken(ctx, owner), 0, &connectionv1.StartAuthorizationRequest{TenantId: tenant.ID, Integration: connectiontest.OAuthOrg})

	conns := env.Connections(b, 0)
	viaSync := withService(withToken(ctx, owner), sync)
	tokReq := &connectionv1.GetAccessTokenRequest{TenantId: tenant.ID, ConnectionId: id}
	broker := env.Broker.Client(b, "connection")
	brokerCtx := grpcclient.ActAs(ctx, tenant.ID, owner)
	credReq := &brokerv1.GetCredentialRequest{TenantId: tenant.ID, ConnectionId: id}
	for range 20 { // warm caches: verified tokens, Vault login, statements
		if _, err := conns.GetAccessToken(viaSync, tokReq); err != nil {
			b.Fatal(err)
		}
		if _, err := broker.GetCredential(brokerCtx, credReq); err != nil {
			b.Fatal(err)
		}
	}
	var tokTimes, credTimes []time.Duration
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		if _, err := conns.GetAccessToken(viaSync, tokReq); err != nil {
			b.Fatal(err)
		}
		tokTimes = append(tokTimes, time.Since(start))
		start = time.Now()
		if _, err := broker.GetCredential(brokerCtx, credReq); err != nil {
			b.Fatal(err)
		}
		credTimes = append(credTimes, time.Since(start))
	}
	b.StopTimer()
	if n := env.Provider.TokenRequests(providertest.GrantRefreshToken); n != 0 {
		b.Fatalf("the fast path refreshed %d times", n)
	}
	report := func(name string, d []time.Duration) time.Duration {
		slices.Sort(d)
		var sum time.Duration
		for _, x := range d {
			sum += x
		}
		b.ReportMetric(float64(d[len(d)/2].Microseconds()), name+"-p50-µs")
		b.ReportMetric(float64(d[len(d)*99/100].Microseconds()), name+"-p99-µs")
		return sum
	}
	tok, cred := report("getaccesstoken", tokTimes), report("getcredential", credTimes)
	b.ReportMetric(float64(tok)/float64(cred), "getaccesstoken/getcredential")
}

func withToken(ctx context.Context, token string) context.Context {
	return withMD(ctx, "authorization", "Bearer "+token)
}

func withService(ctx context.Context, token string) context.Context {
	return withMD(ctx, "x-bulkhead-service-token", token)
}
