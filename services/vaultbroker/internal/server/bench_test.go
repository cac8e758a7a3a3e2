package server_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault-client-go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	brokerv1 "github.com/bulkhead/bulkhead/gen/bulkhead/vaultbroker/v1"
	"github.com/bulkhead/bulkhead/pkg/grpcclient"
	"github.com/bulkhead/bulkhead/pkg/logging"
	"github.com/bulkhead/bulkhead/services/identity/identitytest"
	"github.com/bulkhead/bulkhead/services/vaultbroker/brokertest"
	"github.com/bulkhead/bulkhead/services/vaultbroker/internal/audit"
)

// benchBroker is a broker logging one JSON line per call (to io.Discard), as in production.
func benchBroker(b *testing.B) *brokertest.Broker {
	b.Helper()
	return brokertest.Start(b, brokertest.Options{Logger: logging.NewJSON(io.Discard, slog.LevelInfo)})
}

// directClient logs in to tenant's Vault role exactly as the broker does (identity exchange of
// the tenant's token for the broker, then JWT login) and returns a vault-client-go client
// holding that ready token: the baseline a broker read is compared with.
func directClient(b *testing.B, br *brokertest.Broker, tenantID, userToken string) *vaultapi.Client {
	b.Helper()
	ctx := identitytest.WithToken(context.Background(), br.Identity.ServiceToken(b, brokertest.ClientID, "bulkhead.identity"))
	jwt, err := identityv1.NewTokenServiceClient(br.Identity.Conn(b)).ExchangeToken(ctx, &identityv1.ExchangeTokenRequest{
		SubjectToken: userToken, Audience: []string{"bulkhead.vault"},
	})
	if err != nil {
		b.Fatal(err)
	}
	retry := vaultapi.DefaultConfiguration().RetryConfiguration
	retry.RetryMax = 0
	c, err := vaultapi.New(vaultapi.WithAddress(br.Vault.Addr()), vaultapi.WithRetryConfiguration(retry))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Configuration().HTTPClient.CloseIdleConnections() })
	resp, err := c.Write(context.Background(), "auth/jwt-bulkhead/login", map[string]any{"role": "tenant-" + tenantID, "jwt": jwt.GetAccessToken()})
	if err != nil {
		b.Fatal(err)
	}
	if err := c.SetToken(resp.Auth.ClientToken); err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkGetCredential compares a credential read through the broker — loopback gRPC, the
// full interceptor chain (request id, JSON call log, error mapping, token verification with
// its cache, kill switch with its cache, authz, protovalidate, rate limit), the cached tenant
// Vault token, and the audit row committed before the value is returned — with a direct KV v2
// read by a vault-client-go client holding a ready token of the same tenant, on the same Vault
// in the same run. They alternate per iteration so warm-up and noise hit both alike, together
// with two parts of the overhead measured alone under the same load: an audit row written
// straight to the broker's database, and a bare gRPC hop (health check) to the broker.
func BenchmarkGetCredential(b *testing.B) {
	br := benchBroker(b)
	if br.Mode != "mount" {
		b.Skip("the direct baseline reads the mount-mode path")
	}
	tenant := br.Identity.CreateTenant(b, "bench")
	tok := br.Identity.Token(b, tenant.OwnerKey)
	br.Provision(b, tenant.ID)
	client := br.Client(b, "connection")
	ctx := grpcclient.ActAs(context.Background(), tenant.ID, tok)
	conn := newID()
	req := &brokerv1.GetCredentialRequest{TenantId: tenant.ID, ConnectionId: conn}
	if _, err := client.PutCredential(ctx, &brokerv1.PutCredentialRequest{
		TenantId: tenant.ID, ConnectionId: conn, Data: map[string]string{"access_token": "at-0123456789", "refresh_token": "rt-0123456789"},
	}); err != nil {
		b.Fatal(err)
	}
	if _, err := client.GetCredential(ctx, req); err != nil { // warm: token cached, conns open
		b.Fatal(err)
	}
	direct := directClient(b, br, tenant.ID, tok)
	path := "bulkhead-kv/" + tenant.ID + "/data/" + conn
	logins := br.VaultStats().Logins

	// The audit write alone, on the broker's database under the same load: the price of "no
	// unaudited secret read" when paid in series.
	auditStore := audit.NewStore(br.DB.AppDB(b))
	ev := audit.Event{TenantID: tenant.ID, RequestID: "bench", Operation: "GetCredential", Outcome: "OK",
		Subject: "user:" + tenant.OwnerID, CallerService: "svc:connection", ConnectionID: conn, Version: 1}

	var brokerTime, directTime, auditTime, hopTime time.Duration
	// A bare loopback gRPC hop to the same server (health check: no chain, no handler work),
	// the floor any broker call sits on.
	hconn, err := grpc.NewClient(br.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer hconn.Close()
	hc := healthpb.NewHealthClient(hconn)
	for b.Loop() {
		t0 := time.Now()
		if _, err := direct.Read(ctx, path); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := client.GetCredential(ctx, req); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		if err := auditStore.Append(ctx, ev); err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			b.Fatal(err)
		}
		hopTime += time.Since(t3)
		directTime += t1.Sub(t0)
		brokerTime += t2.Sub(t1)
		auditTime += t3.Sub(t2)
	}
	if got := br.VaultStats().Logins; got != logins {
		b.Fatalf("the broker logged in %d more times; the benchmark must run on a cached token", got-logins)
	}
	b.ReportMetric(float64(directTime.Nanoseconds())/float64(b.N), "direct-ns/read")
	b.ReportMetric(float64(brokerTime.Nanoseconds())/float64(b.N), "broker-ns/read")
	b.ReportMetric(float64(auditTime.Nanoseconds())/float64(b.N), "audit-ns/write")
	b.ReportMetric(float64(hopTime.Nanoseconds())/float64(b.N), "hop-ns")
	b.ReportMetric(float64(brokerTime)/float64(directTime), "broker/direct")
}

// BenchmarkColdTenant is a tenant's first request through gRPC: identity exchange of the
// caller's token for a Vault JWT, Vault JWT login, the read, the audit row.
func BenchmarkColdTenant(b *testing.B) {
	br := benchBroker(b)
	tenant := br.Identity.CreateTenant(b, "bench")
	tok := br.Identity.Token(b, tenant.OwnerKey)
	br.Provision(b, tenant.ID)
	client := br.Client(b, "connection")
	ctx := grpcclient.ActAs(context.Background(), tenant.ID, tok)
	conn := newID()
	if _, err := client.PutCredential(ctx, &brokerv1.PutCredentialRequest{TenantId: tenant.ID, ConnectionId: conn, Data: map[string]string{"k": "v"}}); err != nil {
		b.Fatal(err)
	}
	req := &brokerv1.GetCredentialRequest{TenantId: tenant.ID, ConnectionId: conn}
	before := br.VaultStats().Logins
	for b.Loop() {
		br.ForgetVaultToken(tenant.ID)
		if _, err := client.GetCredential(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(br.VaultStats().Logins-before)/float64(b.N), "logins/op")
}

// BenchmarkProvision1000Tenants provisions 1,000 tenants over gRPC (the provisioning service
// calling ProvisionTenant, each building the layout with the provisioner's Vault token and
// writing an audit row). One op is the whole thousand; tenants/s and ms/tenant are reported.
func BenchmarkProvision1000Tenants(b *testing.B) {
	const n = 1000
	br := benchBroker(b)
	client := br.Client(b, brokertest.ProvisioningService)
	ctx := context.Background()
	var total time.Duration
	for b.Loop() {
		start := time.Now()
		for range n {
			if _, err := client.ProvisionTenant(ctx, &brokerv1.ProvisionTenantRequest{TenantId: newID()}); err != nil {
				b.Fatal(err)
			}
		}
		total += time.Since(start)
	}
	perTenant := total / time.Duration(b.N*n)
	b.ReportMetric(float64(perTenant.Microseconds())/1000, "ms/tenant")
	b.ReportMetric(float64(n)/(total.Seconds()/float64(b.N)), "tenants/s")
}

// BenchmarkGetCredentialConcurrent is the throughput view: 8 concurrent readers, first
// directly against Vault, then through the broker, b.N reads each; the ratio is of the wall
// time per read. On a machine where client, broker, identity, Vault and PostgreSQL share the
// cores it is a CPU ratio more than a latency one.
func BenchmarkGetCredentialConcurrent(b *testing.B) {
	const workers = 8
	br := benchBroker(b)
	if br.Mode != "mount" {
		b.Skip("the direct baseline reads the mount-mode path")
	}
	tenant := br.Identity.CreateTenant(b, "bench")
	tok := br.Identity.Token(b, tenant.OwnerKey)
	br.Provision(b, tenant.ID)
	client := br.Client(b, "connection")
	ctx := grpcclient.ActAs(context.Background(), tenant.ID, tok)
	conn := newID()
	req := &brokerv1.GetCredentialRequest{TenantId: tenant.ID, ConnectionId: conn}
	if _, err := client.PutCredential(ctx, &brokerv1.PutCredentialRequest{TenantId: tenant.ID, ConnectionId: conn, Data: map[string]string{"access_token": "at"}}); err != nil {
		b.Fatal(err)
	}
	direct := directClient(b, br, tenant.ID, tok)
	path := "bulkhead-kv/" + tenant.ID + "/data/" + conn
	run := func(n int, read func() error) time.Duration {
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := range workers {
			count := n / workers
			if w < n%workers {
				count++
			}
			wg.Go(func() {
				for range count {
					if err := read(); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	readDirect := func() error { _, err := direct.Read(ctx, path); return err }
	readBroker := func() error { _, err := client.GetCredential(ctx, req); return err }
	run(workers*4, readDirect) // warm both paths' connection pools
	run(workers*4, readBroker)
	var directTime, brokerTime time.Duration
	for b.Loop() {
		// One op is one read each way; the batches keep 8 readers busy.
		directTime += run(workers, readDirect)
		brokerTime += run(workers, readBroker)
	}
	b.ReportMetric(float64(directTime.Nanoseconds())/float64(b.N*workers), "direct-ns/read")
	b.ReportMetric(float64(brokerTime.Nanoseconds())/float64(b.N*workers), "broker-ns/read")
	b.ReportMetric(float64(brokerTime)/float64(directTime), "broker/direct")
}
