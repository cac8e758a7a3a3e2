package launch_test

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc/codes"

	connectionv1 "github.com/bulkhead/bulkhead/gen/bulkhead/connection/v1"
	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	brokerv1 "github.com/bulkhead/bulkhead/gen/bulkhead/vaultbroker/v1"
	"github.com/bulkhead/bulkhead/pkg/grpcclient"
	"github.com/bulkhead/bulkhead/services/connection/connectiontest"
	"github.com/bulkhead/bulkhead/services/connection/launch"
)

// passes signals each finished offboarding pass; waitUntil waits on it, with a deadline,
// until cond holds after a pass.
type passes chan launch.OffboardingPass

func (p passes) onPass(pass launch.OffboardingPass) {
	select {
	case p <- pass:
	default: // a signal is already waiting; the next pass sends another
	}
}

func (p passes) waitUntil(t *testing.T, what string, cond func(launch.OffboardingPass) bool) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case pass := <-p:
			if pass.Err != nil {
				t.Logf("offboarding pass: %v", pass.Err)
			}
			if cond(pass) {
				return
			}
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// connRow is a connection as stored, read as the superuser (the tenant's own tokens are
// refused once it is deleted).
type connRow struct {
	status, revocation string
	updated            time.Time
}

func readConn(t *testing.T, db *pgxpool.Pool, id string) connRow {
	t.Helper()
	var r connRow
	err := db.QueryRow(testCtx(t),
		`SELECT status, coalesce(revocation_state, ''), updated_at FROM connections WHERE id = $1`, id).Scan(&r.status, &r.revocation, &r.updated)
	if err != nil {
		t.Fatalf("read connection %s: %v", id, err)
	}
	return r
}

// TestOffboarding: identity removes admin X → X's user-level connection is revoked (the
// provider revokes its refresh token, the broker credential is deleted) while the org-level
// connection X created stays usable by others, and member Y's user-level connection and
// tenant B are untouched; re-delivering the event changes nothing; deleting tenant A is left
// to identity's saga (OffboardTenant) — the consumer changes nothing — and B stays alone.
func TestOffboarding(t *testing.T) {
	sig := make(passes, 1)
	env := connectiontest.Start(t, connectiontest.Options{
		Offboarding: launch.OffboardingOptions{Interval: 50 * time.Millisecond, OnPass: sig.onPass},
	})
	super := env.DB.SuperPool(t)
	members := identityv1.NewMemberServiceClient(env.Identity.Conn(t))
	conns := env.Connections(t, 0)
	syncToken := env.Identity.ServiceToken(t, "sync")
	a, b := env.NewTenant(t, "a"), env.NewTenant(t, "b")
	aOwner, bOwner := env.Identity.Token(t, a.OwnerKey), env.Identity.Token(t, b.OwnerKey)
	xID, x := addMember(t, env, aOwner, a, "x@a.example", identityv1.Role_ROLE_ADMIN)
	_, y := addMember(t, env, aOwner, a, "y@a.example", identityv1.Role_ROLE_MEMBER)
	bxID, bx := addMember(t, env, bOwner, b, "x@b.example", identityv1.Role_ROLE_MEMBER)

	xUser := env.Authorize(t, as(t, x), 0, &connectionv1.StartAuthorizationRequest{TenantId: a.ID, Integration: connectiontest.OAuthUser})
	xOrg := env.Authorize(t, as(t, x), 0, &connectionv1.StartAuthorizationRequest{TenantId: a.ID, Integration: connectiontest.OAuthOrg})
	yUser := env.Authorize(t, as(t, y), 0, &connectionv1.StartAuthorizationRequest{TenantId: a.ID, Integration: connectiontest.OAuthUser})
	bUser := env.Authorize(t, as(t, bx), 0, &connectionv1.StartAuthorizationRequest{TenantId: b.ID, Integration: connectiontest.OAuthUser})
	bOrg := env.Authorize(t, as(t, bOwner), 0, &connectionv1.StartAuthorizationRequest{TenantId: b.ID, Integration: connectiontest.OAuthOrg})
	for _, id := range []string{xUser, xOrg, yUser, bUser, bOrg} {
		if r := readConn(t, super, id); r.status != "active" {
			t.Fatalf("connection %s before offboarding: %+v", id, r)
		}
	}
	// B's member with the same e-mail local part is another user: removing A's X must not
	// reach B's user-level connections, even though the consumer reads every tenant's events.
	if xID == bxID {
		t.Fatal("identity reused a user id across tenants")
	}

	brokerClient := env.Broker.Client(t, "connection")
	credential := func(tenant, owner, id string) error {
		_, err := brokerClient.GetCredential(grpcclient.ActAs(testCtx(t), tenant, owner), &brokerv1.GetCredentialRequest{TenantId: tenant, ConnectionId: id})
		return err
	}
	if err := credential(a.ID, aOwner, xUser); err != nil {
		t.Fatalf("X's credential before offboarding: %v", err)
	}

	if _, err := members.RemoveMember(as(t, aOwner), &identityv1.RemoveMemberRequest{TenantId: a.ID, UserId: xID}); err != nil {
		t.Fatal(err)
	}
	sig.waitUntil(t, "X's user-level connection revoked", func(launch.OffboardingPass) bool {
		return readConn(t, super, xUser).status == "revoked"
	})

	if r := readConn(t, super, xUser); r.revocation != "confirmed" {
		t.Fatalf("X's user-level connection: %+v", r)
	}
	if revs := env.Provider.Revocations(); len(revs) != 1 || revs[0].TokenTypeHint != "refresh_token" {
		t.Fatalf("revocations at the provider: %+v", revs)
	}
	wantCode(t, credential(a.ID, aOwner, xUser), codes.NotFound)
	for _, id := range []string{xOrg, yUser, bUser, bOrg} {
		if r := readConn(t, super, id); r.status != "active" {
			t.Fatalf("connection %s after X's removal: %+v", id, r)
		}
	}
	// X's org-level connection is still usable by the tenant's other principals.
	if _, err := conns.GetAccessToken(viaService(t, aOwner, syncToken), &connectionv1.GetAccessTokenRequest{TenantId: a.ID, ConnectionId: xOrg}); err != nil {
		t.Fatalf("owner using the org-level connection X created: %v", err)
	}
	if _, err := conns.GetAccessToken(viaService(t, y, syncToken), &connectionv1.GetAccessTokenRequest{TenantId: a.ID, ConnectionId: yUser}); err != nil {
		t.Fatalf("Y using Y's own connection: %v", err)
	}

	// Re-delivery: rewind the cursor; the pass handles the same events again and changes
	// nothing — no provider call, no row update.
	before := readConn(t, super, xUser)
	if _, err := super.Exec(testCtx(t), `UPDATE event_cursors SET cursor = '' WHERE consumer = 'offboarding'`); err != nil {
		t.Fatal(err)
	}
	sig.waitUntil(t, "a pass re-delivering the events", func(p launch.OffboardingPass) bool { return p.Events > 0 })
	if r := readConn(t, super, xUser); r != before {
		t.Fatalf("re-delivery changed X's connection: %+v → %+v", before, r)
	}
	if n := len(env.Provider.Revocations()); n != 1 {
		t.Fatalf("re-delivery called the provider: %d revocations", n)
	}

	// Deleting tenant A is not this consumer's business any more (identity's saga calls
	// OffboardTenant, TestOffboardTenant): after DeleteTenant, passes leave A's other
	// connections as they were.
	if _, err := identityv1.NewTenantServiceClient(env.Identity.Conn(t)).DeleteTenant(as(t, aOwner), &identityv1.DeleteTenantRequest{TenantId: a.ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := super.Exec(testCtx(t), `UPDATE event_cursors SET cursor = '' WHERE consumer = 'offboarding'`); err != nil {
		t.Fatal(err)
	}
	sig.waitUntil(t, "a pass after the deletion", func(p launch.OffboardingPass) bool { return p.Events > 0 })
	for _, id := range []string{xOrg, yUser} {
		if r := readConn(t, super, id); r.status != "active" {
			t.Fatalf("connection %s after tenant deletion: %+v", id, r)
		}
	}

	// Tenant B is untouched and usable.
	for _, id := range []string{bUser, bOrg} {
		if r := readConn(t, super, id); r.status != "active" {
			t.Fatalf("B's connection %s: %+v", id, r)
		}
	}
	if _, err := conns.GetAccessToken(viaService(t, bx, syncToken), &connectionv1.GetAccessTokenRequest{TenantId: b.ID, ConnectionId: bUser}); err != nil {
		t.Fatalf("B's member using its connection: %v", err)
	}
	if err := credential(b.ID, bOwner, bUser); err != nil {
		t.Fatalf("B's credential: %v", err)
	}
}
