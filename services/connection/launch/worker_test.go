package launch_test

import (
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	connectionv1 "github.com/bulkhead/bulkhead/gen/bulkhead/connection/v1"
	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	brokerv1 "github.com/bulkhead/bulkhead/gen/bulkhead/vaultbroker/v1"
	"github.com/bulkhead/bulkhead/pkg/grpcclient"
	"github.com/bulkhead/bulkhead/pkg/providertest"
	"github.com/bulkhead/bulkhead/services/connection/connectiontest"
	"github.com/bulkhead/bulkhead/services/connection/launch"
)

// workerFixture is an oauthFixture whose instance runs the background worker, with its passes
// on a channel.
type workerFixture struct {
	*oauthFixture
	passes chan launch.WorkerPass
}

func newWorkerFixture(t *testing.T, popts providertest.Options, instances int) *workerFixture {
	t.Helper()
	clk := &clock{}
	passes := make(chan launch.WorkerPass, 1)
	env := connectiontest.Start(t, connectiontest.Options{Now: clk.now, Provider: popts, Worker: &launch.WorkerOptions{
		Interval: 20 * time.Millisecond,
		OnPass: func(p launch.WorkerPass) {
			select {
			case passes <- p:
			default: // the test is not waiting; it will see a later pass
			}
		},
	}})
	for len(env.Instances) < instances {
		env.StartInstance(t)
	}
	f := &oauthFixture{env: env, clk: clk}
	f.tenant = env.NewTenant(t, "acme")
	f.owner = env.Identity.Token(t, f.tenant.OwnerKey)
	f.sync = env.Identity.ServiceToken(t, "sync")
	f.connID = env.Authorize(t, as(t, f.owner), 0, &connectionv1.StartAuthorizationRequest{
		TenantId: f.tenant.ID, Integration: connectiontest.OAuthOrg,
	})
	return &workerFixture{oauthFixture: f, passes: passes}
}

// waitPass waits for a pass after which done holds. Each pass is awaited on the worker's
// signal, never a sleep; the deadline only bounds a broken test.
func (f *workerFixture) waitPass(t *testing.T, what string, done func(launch.WorkerPass) bool) launch.WorkerPass {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case p := <-f.passes:
			if done(p) {
				return p
			}
		case <-deadline:
			t.Fatalf("no worker pass %s", what)
		}
	}
}

// TestWorkerRetriesRevocation: a revocation the provider keeps failing is pending after
// RevokeConnection (its three attempts fail) and after the worker's first retry (three more);
// the worker's second retry, once the backoff has passed, is confirmed by the provider and
// deletes the broker credential. Nothing is retried before its backoff ends.
func TestWorkerRetriesRevocation(t *testing.T) {
	f := newWorkerFixture(t, providertest.Options{}, 1)
	conns := f.env.Connections(t, 0)
	f.env.Provider.FailNextRevocations(6, 503)
	resp, err := conns.RevokeConnection(as(t, f.owner), &connectionv1.RevokeConnectionRequest{TenantId: f.tenant.ID, ConnectionId: f.connID})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetConnection().GetRevocationState(); got != connectionv1.RevocationState_REVOCATION_STATE_PENDING {
		t.Fatalf("after RevokeConnection: %v", got)
	}
	// Not due yet (next attempt in a minute): passes leave it alone.
	f.waitPass(t, "before the backoff", func(p launch.WorkerPass) bool { return p.Due == 0 && p.Err == nil })
	if got := revocationStatuses(f.env.Provider); !slices.Equal(got, []int{503, 503, 503}) {
		t.Fatalf("revocation requests before the backoff ended: %v, want RevokeConnection's three failures", got)
	}

	f.clk.advance(time.Minute + time.Second)
	f.waitPass(t, "retrying the revocation (still failing)", func(p launch.WorkerPass) bool { return p.Pending == 1 })
	if got := f.get(t).GetRevocationState(); got != connectionv1.RevocationState_REVOCATION_STATE_PENDING {
		t.Fatalf("after the first retry: %v", got)
	}
	brokerClient := f.env.Broker.Client(t, "connection")
	credReq := &brokerv1.GetCredentialRequest{TenantId: f.tenant.ID, ConnectionId: f.connID}
	if _, err := brokerClient.GetCredential(grpcclient.ActAs(testCtx(t), f.tenant.ID, f.owner), credReq); err != nil {
		t.Fatalf("the credential must stay while revocation is pending: %v", err)
	}

	f.clk.advance(2*time.Minute + time.Second) // the second backoff
	f.waitPass(t, "confirming the revocation", func(p launch.WorkerPass) bool { return p.Revoked == 1 })
	if got := f.get(t).GetRevocationState(); got != connectionv1.RevocationState_REVOCATION_STATE_CONFIRMED {
		t.Fatalf("after the second retry: %v", got)
	}
	if got := revocationStatuses(f.env.Provider); !slices.Equal(got, []int{503, 503, 503, 503, 503, 503, 200}) {
		t.Fatalf("revocation requests at the provider: %v, want six failures then one success", got)
	}
	_, err = brokerClient.GetCredential(grpcclient.ActAs(testCtx(t), f.tenant.ID, f.owner), credReq)
	wantCode(t, err, codes.NotFound)
	// Confirmed is final: later passes find nothing to do.
	f.clk.advance(time.Hour)
	f.waitPass(t, "after confirmation", func(p launch.WorkerPass) bool { return p.Due == 0 && p.Err == nil })
}

// revocationStatuses lists the provider's answers to revocation requests, in order.
func revocationStatuses(p *providertest.Provider) []int {
	var out []int
	for _, r := range p.Revocations() {
		out = append(out, r.Status)
	}
	return out
}

// TestWorkerRefreshesExpiringToken: an access token entering the refresh margin is refreshed
// by the worker with no caller asking, exactly once; the next GetAccessToken gets the new
// token without a refresh of its own, and it works at the provider.
func TestWorkerRefreshesExpiringToken(t *testing.T) {
	f := newWorkerFixture(t, providertest.Options{AccessTokenLifespan: time.Hour}, 1)
	f.waitPass(t, "before the margin", func(p launch.WorkerPass) bool { return p.Due == 0 && p.Err == nil })
	before := f.get(t)
	f.clk.advance(57 * time.Minute) // inside the 5 minute margin
	f.waitPass(t, "refreshing", func(p launch.WorkerPass) bool { return p.Refreshed == 1 && p.Err == nil })
	if n := f.env.Provider.TokenRequests(providertest.GrantRefreshToken); n != 1 {
		t.Fatalf("%d refresh requests, want 1", n)
	}
	after := f.get(t)
	if !after.GetHealth().GetAccessTokenExpireTime().AsTime().After(before.GetHealth().GetAccessTokenExpireTime().AsTime()) {
		t.Fatalf("access token expiry %v, was %v", after.GetHealth(), before.GetHealth())
	}
	// Fresh now: later passes leave it alone, and a caller gets it without another refresh.
	f.waitPass(t, "after the refresh", func(p launch.WorkerPass) bool { return p.Due == 0 && p.Err == nil })
	tok, err := f.token(t, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := f.env.Provider.TokenRequests(providertest.GrantRefreshToken); n != 1 {
		t.Fatalf("%d refresh requests after GetAccessToken, want still 1", n)
	}
	if code := providerStatus(t, f.env.Provider, tok.GetAccessToken()); code != 200 {
		t.Fatalf("provider answered %d to the refreshed token", code)
	}
}

// TestWorkerRefreshesIdleRefreshToken: a long-lived access token is nowhere near expiry, but its
// refresh token has not been used for the check interval (24h): the worker refreshes it once,
// so providers that drop idle refresh tokens never see one go idle.
func TestWorkerRefreshesIdleRefreshToken(t *testing.T) {
	f := newWorkerFixture(t, providertest.Options{AccessTokenLifespan: 72 * time.Hour}, 1)
	f.waitPass(t, "before the idle interval", func(p launch.WorkerPass) bool { return p.Due == 0 && p.Err == nil })
	f.clk.advance(25 * time.Hour)
	f.waitPass(t, "refreshing the idle token", func(p launch.WorkerPass) bool { return p.Refreshed == 1 && p.Err == nil })
	f.waitPass(t, "after the refresh", func(p launch.WorkerPass) bool { return p.Due == 0 && p.Err == nil })
	if n := f.env.Provider.TokenRequests(providertest.GrantRefreshToken); n != 1 {
		t.Fatalf("%d refresh requests, want 1", n)
	}
}

// TestWorkerTwoReplicasRefreshOnce: both replicas run the worker on the same expiring token;
// the row lock and the re-check under it let exactly one refresh reach the provider.
func TestWorkerTwoReplicasRefreshOnce(t *testing.T) {
	f := newWorkerFixture(t, providertest.Options{AccessTokenLifespan: time.Hour}, 2)
	f.clk.advance(57 * time.Minute)
	f.waitPass(t, "refreshing", func(launch.WorkerPass) bool {
		return f.env.Provider.TokenRequests(providertest.GrantRefreshToken) > 0
	})
	// Several more passes of both replicas: nothing is due any more.
	for range 4 {
		f.waitPass(t, "after the refresh", func(p launch.WorkerPass) bool { return p.Due == 0 && p.Err == nil })
	}
	if n := f.env.Provider.TokenRequests(providertest.GrantRefreshToken); n != 1 {
		t.Fatalf("%d refresh requests from two replicas, want 1", n)
	}
}

// TestWorkerRespectsKillSwitch: a suspended tenant's expiring connection is due, but the worker
// refreshes nothing (identity refuses the tenant's background token).
func TestWorkerRespectsKillSwitch(t *testing.T) {
	f := newWorkerFixture(t, providertest.Options{AccessTokenLifespan: time.Hour}, 1)
	tenants := identityv1.NewTenantServiceClient(f.env.Identity.Conn(t))
	if _, err := tenants.SuspendTenant(as(t, f.env.Identity.OperatorToken(t)), &identityv1.SuspendTenantRequest{TenantId: f.tenant.ID, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	f.clk.advance(57 * time.Minute)
	for range 3 {
		f.waitPass(t, "with the suspended tenant's connection due", func(p launch.WorkerPass) bool { return p.Due == 1 })
	}
	if n := f.env.Provider.TokenRequests(providertest.GrantRefreshToken); n != 0 {
		t.Fatalf("a suspended tenant's connection was refreshed (%d)", n)
	}
}
