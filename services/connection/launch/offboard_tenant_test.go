package launch_test

import (
	"slices"
	"testing"

	"google.golang.org/grpc/codes"

	connectionv1 "github.com/bulkhead/bulkhead/gen/bulkhead/connection/v1"
	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	brokerv1 "github.com/bulkhead/bulkhead/gen/bulkhead/vaultbroker/v1"
	"github.com/bulkhead/bulkhead/pkg/grpcclient"
	"github.com/bulkhead/bulkhead/services/connection/connectiontest"
)

// serviceAccountToken creates a service account in tenant with scopes and returns its token.
func serviceAccountToken(t *testing.T, env *connectiontest.Env, owner string, tenant connectiontest.Tenant, scopes ...string) string {
	t.Helper()
	accounts := identityv1.NewServiceAccountServiceClient(env.Identity.Conn(t))
	sa, err := accounts.CreateServiceAccount(as(t, owner), &identityv1.CreateServiceAccountRequest{TenantId: tenant.ID, Name: "bot", Scopes: scopes})
	if err != nil {
		t.Fatal(err)
	}
	key, err := accounts.CreateApiKey(as(t, owner), &identityv1.CreateApiKeyRequest{TenantId: tenant.ID,
		Owner: &identityv1.CreateApiKeyRequest_ServiceAccountId{ServiceAccountId: sa.GetServiceAccount().GetServiceAccountId()}})
	if err != nil {
		t.Fatal(err)
	}
	return env.Identity.Token(t, key.GetSecret())
}

// TestOffboardTenantRefusals: only identity's saga, acting as itself, may offboard a tenant —
// a user (the tenant's owner), a tenant service account, the connection service's own token
// (it holds tenants.offboard, but is not identity) and a service without tenants.offboard
// (sync) all get PERMISSION_DENIED, and none of it touches the tenant's connection; identity
// itself gets FAILED_PRECONDITION TENANT_NOT_DELETING for an ACTIVE tenant.
func TestOffboardTenantRefusals(t *testing.T) {
	env := connectiontest.Start(t, connectiontest.Options{})
	tenant := env.NewTenant(t, "acme")
	owner := env.Identity.Token(t, tenant.OwnerKey)
	id := env.Authorize(t, as(t, owner), 0, &connectionv1.StartAuthorizationRequest{TenantId: tenant.ID, Integration: connectiontest.OAuthOrg})
	offb := env.Offboarding(t, 0)
	offboard := func(token string) error {
		_, err := offb.OffboardTenant(as(t, token), &connectionv1.OffboardTenantRequest{TenantId: tenant.ID, AbandonPending: true})
		return err
	}

	for _, tc := range []struct {
		name  string
		token string
	}{
		{"tenant owner", owner},
		{"tenant service account", serviceAccountToken(t, env, owner, tenant, "connections.manage", "integrations.manage")},
		{"connection service itself", env.Identity.ServiceToken(t, "connection")},
		{"service without tenants.offboard", env.Identity.ServiceToken(t, "sync")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantCode(t, offboard(tc.token), codes.PermissionDenied)
		})
	}
	wantReason(t, offboard(env.Identity.ServiceToken(t, "identity")), codes.FailedPrecondition, "TENANT_NOT_DELETING")

	got, err := env.Connections(t, 0).GetConnection(as(t, owner), &connectionv1.GetConnectionRequest{TenantId: tenant.ID, ConnectionId: id})
	if err != nil || got.GetConnection().GetStatus() != connectionv1.ConnectionStatus_CONNECTION_STATUS_ACTIVE {
		t.Fatalf("the tenant's connection after the refused calls: %v, %v", got, err)
	}
	if n := len(env.Provider.Revocations()); n != 0 {
		t.Fatalf("%d revocations at the provider", n)
	}
}

// backgroundToken is what the connection service acts for tenantID with: identity's
// ExchangeToken of the service's own token with the tenant and no user (for a DELETING tenant
// identity issues it to a service holding tenants.offboard).
func backgroundToken(t *testing.T, env *connectiontest.Env, tenantID string) string {
	t.Helper()
	resp, err := identityv1.NewTokenServiceClient(env.Identity.Conn(t)).ExchangeToken(as(t, env.Identity.ServiceToken(t, "connection")),
		&identityv1.ExchangeTokenRequest{TenantId: tenantID, Audience: []string{"bulkhead.vaultbroker"}})
	if err != nil {
		t.Fatalf("background token: %v", err)
	}
	return resp.GetAccessToken()
}

// TestOffboardTenant: identity deletes tenant A (DELETING) and, as its saga does, calls
// OffboardTenant as itself. Every connection of A is revoked at once: the OAuth2 ones at the
// fosite provider (RFC 7009; the first one's revocation fails 3×503 and stays pending, the
// other is confirmed), the API key one not supported, the credentials of the final ones
// deleted in the broker while the pending one's is kept for the worker. The counts cover the
// whole tenant, and calling again changes nothing and asks the provider nothing (the pending
// revocation's backoff has not passed). With abandon_pending the pending one is given up —
// failed, "tenant offboarding deadline passed", credential deleted — and nothing is pending;
// again idempotent. Tenant B, ACTIVE, is untouched and refused (TENANT_NOT_DELETING).
func TestOffboardTenant(t *testing.T) {
	env := connectiontest.Start(t, connectiontest.Options{})
	super := env.DB.SuperPool(t)
	a, b := env.NewTenant(t, "a"), env.NewTenant(t, "b")
	aOwner, bOwner := env.Identity.Token(t, a.OwnerKey), env.Identity.Token(t, b.OwnerKey)
	_, y := addMember(t, env, aOwner, a, "y@a.example", identityv1.Role_ROLE_MEMBER)
	aOrg := env.Authorize(t, as(t, aOwner), 0, &connectionv1.StartAuthorizationRequest{TenantId: a.ID, Integration: connectiontest.OAuthOrg})
	aUser := env.Authorize(t, as(t, y), 0, &connectionv1.StartAuthorizationRequest{TenantId: a.ID, Integration: connectiontest.OAuthUser})
	env.Provider.AddAPIKey("a-key", "acct")
	created, err := env.Connections(t, 0).CreateCredentialConnection(as(t, aOwner), &connectionv1.CreateCredentialConnectionRequest{
		TenantId: a.ID, Integration: connectiontest.APIKey, Secret: "a-key",
	})
	if err != nil {
		t.Fatal(err)
	}
	aKey := created.GetConnection().GetConnectionId()
	bOrg := env.Authorize(t, as(t, bOwner), 0, &connectionv1.StartAuthorizationRequest{TenantId: b.ID, Integration: connectiontest.OAuthOrg})

	if _, err := identityv1.NewTenantServiceClient(env.Identity.Conn(t)).DeleteTenant(as(t, aOwner), &identityv1.DeleteTenantRequest{TenantId: a.ID}); err != nil {
		t.Fatal(err)
	}
	offb := env.Offboarding(t, 0)
	identityToken := env.Identity.ServiceToken(t, "identity")
	offboard := func(tenantID string, abandon bool) (*connectionv1.OffboardTenantResponse, error) {
		return offb.OffboardTenant(as(t, identityToken), &connectionv1.OffboardTenantRequest{TenantId: tenantID, AbandonPending: abandon})
	}
	want := func(what string, got *connectionv1.OffboardTenantResponse, revoked, pending, failed int32) {
		t.Helper()
		if got.GetRevoked() != revoked || got.GetPending() != pending || got.GetFailed() != failed {
			t.Fatalf("%s: %v, want revoked %d, pending %d, failed %d", what, got, revoked, pending, failed)
		}
	}
	broker := env.Broker.Client(t, "connection")
	credential := func(id string) error {
		_, err := broker.GetCredential(grpcclient.ActAs(testCtx(t), a.ID, backgroundToken(t, env, a.ID)),
			&brokerv1.GetCredentialRequest{TenantId: a.ID, ConnectionId: id})
		return err
	}

	env.Provider.FailNextRevocations(revokeAttempts, 503)
	got, err := offboard(a.ID, false)
	if err != nil {
		t.Fatal(err)
	}
	want("first call", got, 2, 1, 0)
	if st := revocationStatuses(env.Provider); !slices.Equal(st, []int{503, 503, 503, 200}) {
		t.Fatalf("revocations at the provider: %v, want 3 failures (the pending one) and one success", st)
	}
	var pending, confirmed string
	for _, id := range []string{aOrg, aUser} {
		switch r := readConn(t, super, id); {
		case r.status == "revoked" && r.revocation == "pending":
			pending = id
		case r.status == "revoked" && r.revocation == "confirmed":
			confirmed = id
		default:
			t.Fatalf("connection %s after OffboardTenant: %+v", id, r)
		}
	}
	if pending == "" || confirmed == "" {
		t.Fatal("want one pending and one confirmed OAuth2 connection")
	}
	if r := readConn(t, super, aKey); r.status != "revoked" || r.revocation != "not_supported" {
		t.Fatalf("API key connection: %+v", r)
	}
	wantCode(t, credential(confirmed), codes.NotFound)
	wantCode(t, credential(aKey), codes.NotFound)
	if err := credential(pending); err != nil {
		t.Fatalf("the pending revocation's credential must stay for the worker: %v", err)
	}

	// Again: same answer, no provider call, no row change.
	before := readConn(t, super, pending)
	got, err = offboard(a.ID, false)
	if err != nil {
		t.Fatal(err)
	}
	want("second call", got, 2, 1, 0)
	if n := len(env.Provider.Revocations()); n != 4 {
		t.Fatalf("the second call reached the provider: %d revocations", n)
	}
	if r := readConn(t, super, pending); r != before {
		t.Fatalf("the second call changed the pending connection: %+v → %+v", before, r)
	}

	// The deadline passed: the pending revocation is given up.
	got, err = offboard(a.ID, true)
	if err != nil {
		t.Fatal(err)
	}
	want("abandoning", got, 3, 0, 1)
	var reason string
	if err := super.QueryRow(testCtx(t), `SELECT revocation_state, revocation_failure_reason FROM connections WHERE id = $1`, pending).
		Scan(new(string), &reason); err != nil {
		t.Fatal(err)
	}
	if r := readConn(t, super, pending); r.revocation != "failed" || reason != "tenant offboarding deadline passed" {
		t.Fatalf("the abandoned connection: %+v, reason %q", r, reason)
	}
	wantCode(t, credential(pending), codes.NotFound)
	if types := eventTypes(t, env, pending); types[len(types)-1] != "connection.revocation_failed" {
		t.Fatalf("events of the abandoned connection: %v", types)
	}
	got, err = offboard(a.ID, true)
	if err != nil {
		t.Fatal(err)
	}
	want("after abandoning", got, 3, 0, 1)
	if n := len(env.Provider.Revocations()); n != 4 {
		t.Fatalf("%d revocations at the provider, want still 4", n)
	}

	// B: ACTIVE, refused, untouched.
	_, err = offboard(b.ID, true)
	wantReason(t, err, codes.FailedPrecondition, "TENANT_NOT_DELETING")
	if r := readConn(t, super, bOrg); r.status != "active" {
		t.Fatalf("B's connection: %+v", r)
	}
	if _, err := env.Connections(t, 0).GetAccessToken(viaService(t, bOwner, env.Identity.ServiceToken(t, "sync")),
		&connectionv1.GetAccessTokenRequest{TenantId: b.ID, ConnectionId: bOrg}); err != nil {
		t.Fatalf("B's connection no longer usable: %v", err)
	}
}
