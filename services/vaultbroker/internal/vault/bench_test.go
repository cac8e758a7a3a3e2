package vault_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/services/vaultbroker/internal/vault"
	"github.com/google/uuid"
)

// BenchmarkGetCredential compares a credential read through the broker (cached tenant token,
// validation, 403 handling, decoding) with a direct KV v2 read by a ready vault-client-go
// client holding the same token, on the same Vault in the same run. The two are interleaved
// per iteration so server warm-up and noise hit both alike; the ratio is the broker's overhead.
func BenchmarkGetCredential(b *testing.B) {
	e := testEnv(b)
	ctx := context.Background()
	tenant := e.tenant(b)
	br := e.broker(b, nil)
	cred := seed(b, br, tenant)
	token, err := vault.TenantTokenForTest(ctx, br, tenant)
	if err != nil {
		b.Fatal(err)
	}
	direct := e.rawClient(b, token)
	path := vault.KVMountPrefix + "/" + tenant + "/data/" + cred
	var brokerTime, directTime time.Duration
	for b.Loop() {
		t0 := time.Now()
		if _, err := direct.Read(ctx, path); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := br.GetCredential(ctx, tenant, cred, 0); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		directTime += t1.Sub(t0)
		brokerTime += t2.Sub(t1)
	}
	if br.Stats().Logins != 1 {
		b.Fatalf("broker logged in %d times; the benchmark must run on a cached token", br.Stats().Logins)
	}
	b.ReportMetric(float64(directTime.Nanoseconds())/float64(b.N), "direct-ns/read")
	b.ReportMetric(float64(brokerTime.Nanoseconds())/float64(b.N), "broker-ns/read")
	b.ReportMetric(float64(brokerTime)/float64(directTime), "broker/direct")
}

// BenchmarkColdTenant is the first request for a tenant: JWT mint (stands in for identity's
// exchange), Vault JWT login, then the read.
func BenchmarkColdTenant(b *testing.B) {
	e := testEnv(b)
	ctx := context.Background()
	tenant := e.tenant(b)
	br := e.broker(b, nil)
	cred := seed(b, br, tenant)
	for b.Loop() {
		br.Forget(tenant)
		if _, err := br.GetCredential(ctx, tenant, cred, 0); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(br.Stats().Logins-1)/float64(b.N), "logins/op")
}

// BenchmarkProvision is the time to build one tenant's layout with the provisioner's token
// (deprovisioning, untimed, keeps the mount table from growing).
func BenchmarkProvision(b *testing.B) {
	e := testEnv(b)
	ctx := context.Background()
	var done []string
	b.Cleanup(func() {
		for _, tenant := range done {
			_, _ = e.prov.Deprovision(context.Background(), tenant)
		}
	})
	for b.Loop() {
		tenant := uuid.NewString()
		if _, err := e.prov.Provision(ctx, tenant); err != nil {
			b.Fatal(err)
		}
		done = append(done, tenant)
	}
}

// BenchmarkCachedTenantMemory measures the heap held per cached tenant (client + token state
// + LRU entry), from runtime.MemStats before and after caching n tenants, and reports the cost
// of a cached read spread over those tenants.
func BenchmarkCachedTenantMemory(b *testing.B) {
	const n = 200
	e := testEnv(b)
	ctx := context.Background()
	tenants := make([]string, n)
	for i := range tenants {
		tenants[i] = e.tenant(b)
	}
	seeder := e.broker(b, nil)
	cred := seed(b, seeder, tenants...)
	br := e.broker(b, nil)

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for _, tenant := range tenants {
		if _, err := br.GetCredential(ctx, tenant, cred, 0); err != nil {
			b.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if got := br.Stats().Cached; got != n {
		b.Fatalf("cached %d tenants, want %d", got, n)
	}
	perTenant := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / n

	i := 0
	for b.Loop() {
		if _, err := br.GetCredential(ctx, tenants[i%n], cred, 0); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(perTenant, "heap-bytes/cached-tenant")
}
