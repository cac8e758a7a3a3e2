package launch_test

import (
	"sync"
	"testing"

	"google.golang.org/grpc/codes"

	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/services/identity/identitytest"
)

func TestCreateTenantIdempotency(t *testing.T) {
	id := identitytest.Start(t, identitytest.Options{})
	c := newClients(t, id)
	req := func(key, name string) *identityv1.CreateTenantRequest {
		return &identityv1.CreateTenantRequest{Name: name, OwnerEmail: "alice@acme.example", IdempotencyKey: key}
	}
	issue := func(key string) error {
		_, err := c.tokens.IssueToken(testCtx(t), &identityv1.IssueTokenRequest{Credential: &identityv1.IssueTokenRequest_ApiKey{ApiKey: key}})
		return err
	}

	first, err := c.tenants.CreateTenant(testCtx(t), req("k-1", "Acme"))
	if err != nil {
		t.Fatal(err)
	}

	// A replay before the key was ever used: same tenant and owner, and a fresh key (the
	// caller evidently lost the first response); the unused first key is revoked.
	second, err := c.tenants.CreateTenant(testCtx(t), req("k-1", "Acme"))
	if err != nil {
		t.Fatal(err)
	}
	if !second.GetReplayed() || second.GetTenant().GetTenantId() != first.GetTenant().GetTenantId() ||
		second.GetOwner().GetUserId() != first.GetOwner().GetUserId() {
		t.Fatalf("replay answered %v, want tenant %s replayed", second, first.GetTenant().GetTenantId())
	}
	if second.GetApiKeySecret() == "" || second.GetApiKeySecret() == first.GetApiKeySecret() {
		t.Fatal("replay before first use must rotate the owner key and return the new one")
	}
	wantCode(t, issue(first.GetApiKeySecret()), codes.Unauthenticated)
	if err := issue(second.GetApiKeySecret()); err != nil {
		t.Fatalf("rotated key: %v", err)
	}

	// Once the key has been used, a replay returns no secret and leaves the key alone.
	third, err := c.tenants.CreateTenant(testCtx(t), req("k-1", "Acme"))
	if err != nil {
		t.Fatal(err)
	}
	if !third.GetReplayed() || third.GetApiKeySecret() != "" || third.GetApiKey().GetApiKeyId() != second.GetApiKey().GetApiKeyId() {
		t.Fatalf("replay after use: %v", third)
	}
	if err := issue(second.GetApiKeySecret()); err != nil {
		t.Fatalf("used key after a replay: %v", err)
	}

	// Same key, different request.
	_, err = c.tenants.CreateTenant(testCtx(t), req("k-1", "Other"))
	wantCode(t, err, codes.AlreadyExists)
	if reason(err) != apierr.ReasonIdempotencyReuse {
		t.Fatalf("reason %q, want %s", reason(err), apierr.ReasonIdempotencyReuse)
	}

	// Without a key, each call is a new tenant.
	x, err := c.tenants.CreateTenant(testCtx(t), req("", "Acme"))
	if err != nil {
		t.Fatal(err)
	}
	if x.GetTenant().GetTenantId() == first.GetTenant().GetTenantId() || x.GetReplayed() {
		t.Fatal("a request without idempotency key was replayed")
	}

	// Concurrent identical creates make one tenant.
	const n = 8
	var wg sync.WaitGroup
	ids := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.tenants.CreateTenant(testCtx(t), req("k-concurrent", "Race"))
			errs[i] = err
			ids[i] = resp.GetTenant().GetTenantId()
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("concurrent create %d: %v", i, errs[i])
		}
		if ids[i] != ids[0] {
			t.Fatalf("concurrent creates made tenants %v", ids)
		}
	}
	var tenants int
	if err := id.DB.SuperPool(t).QueryRow(testCtx(t), "SELECT count(*) FROM tenants WHERE name = 'Race'").Scan(&tenants); err != nil || tenants != 1 {
		t.Fatalf("%d tenants named Race (%v), want 1", tenants, err)
	}
	// However many replays rotated the key, exactly one owner key is live.
	var live int
	if err := id.DB.SuperPool(t).QueryRow(testCtx(t), "SELECT count(*) FROM api_keys WHERE tenant_id = $1 AND revoked_at IS NULL", ids[0]).Scan(&live); err != nil || live != 1 {
		t.Fatalf("%d live owner keys (%v), want 1", live, err)
	}
}

// TestRemoveMemberOutbox: RemoveMember writes exactly one member.removed event, with the
// tenant and user, in the same transaction as the removal; a failed removal writes none.
func TestRemoveMemberOutbox(t *testing.T) {
	id := identitytest.Start(t, identitytest.Options{})
	c := newClients(t, id)
	tn := id.CreateTenant(t, "acme")
	owner := as(t, id.Token(t, tn.OwnerKey))
	bob, err := c.members.AddMember(owner, &identityv1.AddMemberRequest{TenantId: tn.ID, Email: "bob@acme.example", Role: identityv1.Role_ROLE_MEMBER})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.members.RemoveMember(owner, &identityv1.RemoveMemberRequest{TenantId: tn.ID, UserId: bob.GetMember().GetUserId()}); err != nil {
		t.Fatal(err)
	}
	_, err = c.members.RemoveMember(owner, &identityv1.RemoveMemberRequest{TenantId: tn.ID, UserId: bob.GetMember().GetUserId()})
	wantCode(t, err, codes.NotFound)
	_, err = c.members.RemoveMember(owner, &identityv1.RemoveMemberRequest{TenantId: tn.ID, UserId: tn.OwnerID})
	wantCode(t, err, codes.FailedPrecondition)

	type event struct{ tenant, user string }
	rows, err := id.DB.SuperPool(t).Query(testCtx(t), `SELECT payload->>'tenant_id', payload->>'user_id' FROM outbox
		WHERE tenant_id = $1 AND event_type = 'member.removed'`, tn.ID)
	if err != nil {
		t.Fatal(err)
	}
	var events []event
	for rows.Next() {
		var e event
		if err := rows.Scan(&e.tenant, &e.user); err != nil {
			t.Fatal(err)
		}
		events = append(events, e)
	}
	if len(events) != 1 || events[0] != (event{tn.ID, bob.GetMember().GetUserId()}) {
		t.Fatalf("member.removed events %+v, want exactly one for %s", events, bob.GetMember().GetUserId())
	}
}
