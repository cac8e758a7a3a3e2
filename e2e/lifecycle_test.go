// Package e2e holds tests that cross every service: the real identity, vault-broker (on a
// real Vault), connection service and an ory/fosite OAuth2 provider, all over loopback gRPC
// and HTTP, each on its own PostgreSQL database.
package e2e

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	connectionv1 "github.com/bulkhead/bulkhead/gen/bulkhead/connection/v1"
	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	"github.com/bulkhead/bulkhead/pkg/testenv"
	"github.com/bulkhead/bulkhead/services/connection/connectiontest"
	"github.com/bulkhead/bulkhead/services/identity/identitytest"
	identity "github.com/bulkhead/bulkhead/services/identity/launch"
	syncsvc "github.com/bulkhead/bulkhead/services/sync/launch"
	syncmigrations "github.com/bulkhead/bulkhead/services/sync/migrations"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func as(t *testing.T, token string) context.Context {
	return identitytest.WithToken(testCtx(t), token)
}

// steps records the saga's attempts.
type steps struct {
	mu  sync.Mutex
	all []identity.LifecycleOutcome
}

func (s *steps) add(o identity.LifecycleOutcome) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.all = append(s.all, o)
}

func (s *steps) of(tenantID string) []identity.LifecycleOutcome {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []identity.LifecycleOutcome
	for _, o := range s.all {
		if o.TenantID == tenantID {
			out = append(out, o)
		}
	}
	return out
}

// saga is a running environment with identity's lifecycle saga started against it.
type saga struct {
	env     *connectiontest.Env
	clock   *clock
	sync    *syncsvc.Running
	tenants identityv1.TenantServiceClient
	op      string
	steps   *steps
}

// startSync runs the sync service against env's identity, connection service and broker.
func startSync(t *testing.T, env *connectiontest.Env) *syncsvc.Running {
	t.Helper()
	db := testenv.NewDatabase(t, testenv.DBSpec{Name: "sync", Migrations: syncmigrations.FS})
	cfg := syncsvc.DefaultConfig()
	cfg.GRPCAddr = "127.0.0.1:0"
	cfg.DatabaseURL, cfg.MigrateDatabaseURL = syncsvc.Secret(db.AppURL), syncsvc.Secret(db.OwnerURL)
	cfg.AppRole = db.Roles.App
	cfg.IdentityAddr, cfg.IdentityJWKSURL, cfg.Issuer = env.Identity.GRPCAddr, env.Identity.JWKSURL, env.Identity.Issuer
	cfg.ClientSecret = syncsvc.Secret(env.Identity.PlatformSecret("sync"))
	cfg.ConnectionAddr, cfg.BrokerAddr = env.Instances[0].GRPCAddr, env.Broker.GRPCAddr
	cfg.RecordHashKey = syncsvc.Secret("e2e-record-hash-key-of-enough-length-0123456789")
	svc, err := syncsvc.Start(testCtx(t), cfg, syncsvc.Options{})
	if err != nil {
		t.Fatalf("start sync: %v", err)
	}
	t.Cleanup(func() {
		if err := svc.Close(); err != nil {
			t.Errorf("stop sync: %v", err)
		}
	})
	return svc
}

// clock is the connection service's settable clock: its revocation backoff is minutes long.
type clock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

// startEnv starts identity, the vault-broker, the connection service (on clk) and the
// provider.
func startEnv(t *testing.T, clk *clock) *connectiontest.Env {
	t.Helper()
	return connectiontest.Start(t, connectiontest.Options{Now: clk.now})
}

func startSaga(t *testing.T, deadline time.Duration) *saga {
	t.Helper()
	clk := &clock{}
	env := startEnv(t, clk)
	return startSagaOn(t, env, clk, env.Broker.GRPCAddr, deadline)
}

// startSagaOn starts the sync service and identity's saga against env, reaching the
// vault-broker at brokerAddr.
func startSagaOn(t *testing.T, env *connectiontest.Env, clk *clock, brokerAddr string, deadline time.Duration) *saga {
	t.Helper()
	s := &saga{env: env, clock: clk, tenants: identityv1.NewTenantServiceClient(env.Identity.Conn(t)), op: env.Identity.OperatorToken(t), steps: &steps{}}
	s.sync = startSync(t, env)
	err := env.Identity.StartLifecycle(identity.LifecycleTargets{
		VaultBrokerAddr: brokerAddr, ConnectionAddr: env.Instances[0].GRPCAddr, SyncAddr: s.sync.GRPCAddr,
		OffboardDeadline: deadline, Interval: 50 * time.Millisecond, PendingRecheck: 100 * time.Millisecond,
		OnStep: s.steps.add,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// waitTenant polls GetTenant (as the operator) until cond holds.
func (s *saga) waitTenant(t *testing.T, tenantID, what string, cond func(*identityv1.Tenant) bool) *identityv1.Tenant {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := s.tenants.GetTenant(as(t, s.op), &identityv1.GetTenantRequest{TenantId: tenantID})
		if err == nil && cond(resp.GetTenant()) {
			return resp.GetTenant()
		}
		if time.Now().After(deadline) {
			t.Fatalf("tenant %s never %s: %v, %v", tenantID, what, resp.GetTenant(), err)
		}
		<-tick.C
	}
}

func provisioned(tn *identityv1.Tenant) bool {
	l := tn.GetLifecycle()
	return l.GetPendingStep() == "" && slices.Contains(l.GetCompletedSteps(), "vault.provision")
}

func deleted(tn *identityv1.Tenant) bool {
	return tn.GetStatus() == identityv1.TenantStatus_TENANT_STATUS_DELETED
}

type connRow struct{ status, revocation, reason string }

func readConn(t *testing.T, db *pgxpool.Pool, id string) connRow {
	t.Helper()
	var r connRow
	err := db.QueryRow(testCtx(t), `SELECT status, coalesce(revocation_state, ''), coalesce(revocation_failure_reason, '')
FROM connections WHERE id = $1`, id).Scan(&r.status, &r.revocation, &r.reason)
	if err != nil {
		t.Fatalf("read connection %s: %v", id, err)
	}
	return r
}

func eventTypes(t *testing.T, db *pgxpool.Pool, tenantID string) []string {
	t.Helper()
	rows, err := db.Query(testCtx(t), `SELECT event_type FROM outbox WHERE tenant_id = $1 ORDER BY seq`, tenantID)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for rows.Next() {
		var e string
		if err := rows.Scan(&e); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestTenantLifecycle: a tenant onboarded through identity alone is provisioned in Vault by the
// saga (no operator, no test-side provisioning), so its connections' credentials can be
// stored. Deleting it refuses its principals at once, revokes every connection at the
// provider — waiting out a provider failure — while its credentials can still be read, then
// deletes its Vault layout and marks it DELETED. Another tenant is untouched throughout.
func TestTenantLifecycle(t *testing.T) {
	s := startSaga(t, time.Hour)
	env := s.env
	// CreateTenant provisions before it answers: the response already shows it.
	created, err := s.tenants.CreateTenant(testCtx(t), &identityv1.CreateTenantRequest{Name: "leaving", OwnerEmail: "owner@leaving.example"})
	if err != nil {
		t.Fatal(err)
	}
	if !provisioned(created.GetTenant()) {
		t.Fatalf("CreateTenant answered before provisioning: %v", created.GetTenant().GetLifecycle())
	}
	a := identitytest.Tenant{ID: created.GetTenant().GetTenantId(), OwnerID: created.GetOwner().GetUserId(), OwnerKey: created.GetApiKeySecret()}
	b := env.Identity.CreateTenant(t, "staying")
	s.waitTenant(t, b.ID, "provisioned", provisioned)

	aOwner, bOwner := env.Identity.Token(t, a.OwnerKey), env.Identity.Token(t, b.OwnerKey)
	// Completing an authorization stores the tokens through the broker: it works only because
	// the saga created the tenant's Vault layout.
	aOrg := env.Authorize(t, as(t, aOwner), 0, &connectionv1.StartAuthorizationRequest{TenantId: a.ID, Integration: connectiontest.OAuthOrg})
	aUser := env.Authorize(t, as(t, aOwner), 0, &connectionv1.StartAuthorizationRequest{TenantId: a.ID, Integration: connectiontest.OAuthUser})
	bOrg := env.Authorize(t, as(t, bOwner), 0, &connectionv1.StartAuthorizationRequest{TenantId: b.ID, Integration: connectiontest.OAuthOrg})

	// The provider fails the first revocation (all three tries of it): the saga must wait and
	// ask again rather than clear Vault while a credential is still live at the provider.
	env.Provider.FailNextRevocations(3, 503)
	resp, err := s.tenants.DeleteTenant(as(t, aOwner), &identityv1.DeleteTenantRequest{TenantId: a.ID})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetTenant().GetStatus() != identityv1.TenantStatus_TENANT_STATUS_DELETING {
		t.Fatalf("DeleteTenant: %v", resp.GetTenant())
	}
	// The owner is refused by the connection service within the status cache's TTL.
	conns := env.Connections(t, 0)
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		_, err := conns.ListConnections(as(t, aOwner), &connectionv1.ListConnectionsRequest{TenantId: a.ID})
		if status.Code(err) == codes.PermissionDenied {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a DELETING tenant's owner still lists connections: %v", err)
		}
		<-tick.C
	}

	// The saga waits while the revocation is pending…
	pending := s.waitTenant(t, a.ID, "waiting for a revocation", func(tn *identityv1.Tenant) bool {
		return tn.GetLifecycle().GetPendingStep() == "connections.offboard" && tn.GetLifecycle().GetAttempts() > 0
	})
	if pending.GetLifecycle().GetLastError() == "" || deleted(pending) {
		t.Fatalf("lifecycle while a revocation is pending: %v", pending)
	}
	// …until the connection service's backoff has passed and the provider confirms.
	s.clock.advance(10 * time.Minute)
	tn := s.waitTenant(t, a.ID, "deleted", deleted)
	if got, want := tn.GetLifecycle().GetCompletedSteps(), []string{"vault.provision", "connections.offboard", "sync.purge", "vault.deprovision"}; !slices.Equal(got, want) {
		t.Fatalf("completed steps %v, want %v", got, want)
	}
	if tn.GetLifecycle().GetPendingStep() != "" || tn.GetLifecycle().GetDeleteTime() == nil {
		t.Fatalf("lifecycle %v", tn.GetLifecycle())
	}
	waited := false
	for _, o := range s.steps.of(a.ID) {
		waited = waited || (o.Step == "connections.offboard" && !o.Done)
	}
	if !waited {
		t.Fatalf("the saga never waited for the failed revocation: %+v", s.steps.of(a.ID))
	}

	// Both connections were revoked at the provider, confirmed, before Vault went.
	super := env.DB.SuperPool(t)
	for _, id := range []string{aOrg, aUser} {
		if r := readConn(t, super, id); r.status != "revoked" || r.revocation != "confirmed" {
			t.Fatalf("A's connection %s: %+v", id, r)
		}
	}
	confirmed := 0
	for _, r := range env.Provider.Revocations() {
		if r.Status == 200 && !r.Injected {
			confirmed++
		}
	}
	if confirmed != 2 {
		t.Fatalf("revocations confirmed at the provider: %d, want 2 (%+v)", confirmed, env.Provider.Revocations())
	}
	// A's Vault layout is gone (provisioning it now starts from nothing); B's is the one the
	// saga made.
	if env.Broker.Provision(t, a.ID).GetAlreadyProvisioned() {
		t.Fatal("A's Vault layout survived its deletion")
	}
	if !env.Broker.Provision(t, b.ID).GetAlreadyProvisioned() {
		t.Fatal("B was not provisioned by the saga")
	}
	if got, want := eventTypes(t, env.Identity.DB.SuperPool(t), a.ID), []string{"tenant.created", "tenant.deleting", "tenant.deleted"}; !slices.Equal(got, want) {
		t.Fatalf("A's identity events %v, want %v", got, want)
	}

	// B is untouched and its connection usable.
	if r := readConn(t, super, bOrg); r.status != "active" {
		t.Fatalf("B's connection: %+v", r)
	}
	syncCtx := identitytest.WithServiceToken(as(t, bOwner), env.Identity.ServiceToken(t, "sync"))
	if _, err := conns.GetAccessToken(syncCtx, &connectionv1.GetAccessTokenRequest{TenantId: b.ID, ConnectionId: bOrg}); err != nil {
		t.Fatalf("B's connection after A's deletion: %v", err)
	}
	// A is gone for everyone, DeleteTenant is idempotent.
	again, err := s.tenants.DeleteTenant(as(t, s.op), &identityv1.DeleteTenantRequest{TenantId: a.ID})
	if err != nil || !deleted(again.GetTenant()) {
		t.Fatalf("DeleteTenant again: %v, %v", again, err)
	}
}

// TestTenantDeletionDeadline: a provider that never confirms cannot hold a deleted tenant's
// secrets hostage. Once the offboarding deadline passes the saga gives the revocation up (the
// connection shows REVOCATION_STATE_FAILED and why) and finishes the deletion.
func TestTenantDeletionDeadline(t *testing.T) {
	s := startSaga(t, time.Second)
	env := s.env
	a := env.Identity.CreateTenant(t, "leaving")
	s.waitTenant(t, a.ID, "provisioned", provisioned)
	owner := env.Identity.Token(t, a.OwnerKey)
	org := env.Authorize(t, as(t, owner), 0, &connectionv1.StartAuthorizationRequest{TenantId: a.ID, Integration: connectiontest.OAuthOrg})

	env.Provider.FailNextRevocations(1_000_000, 503)
	if _, err := s.tenants.DeleteTenant(as(t, owner), &identityv1.DeleteTenantRequest{TenantId: a.ID}); err != nil {
		t.Fatal(err)
	}
	tn := s.waitTenant(t, a.ID, "deleted", deleted)
	if !slices.Contains(tn.GetLifecycle().GetCompletedSteps(), "vault.deprovision") {
		t.Fatalf("lifecycle %v", tn.GetLifecycle())
	}
	r := readConn(t, env.DB.SuperPool(t), org)
	if r.status != "revoked" || r.revocation != "failed" || r.reason == "" {
		t.Fatalf("connection after the deadline: %+v", r)
	}
	var pendingSeen bool
	for _, o := range s.steps.of(a.ID) {
		pendingSeen = pendingSeen || o.Pending > 0
	}
	if !pendingSeen {
		t.Fatalf("the saga never saw the revocation pending: %+v", s.steps.of(a.ID))
	}
}
