package launch_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/services/identity/identitytest"
	"github.com/bulkhead/bulkhead/services/identity/launch"
)

// TestKillSwitch: after SuspendTenant the tenant's existing token is refused (within the status
// cache TTL) and IssueToken refuses its keys; ResumeTenant restores both. DeleteTenant is final.
func TestKillSwitch(t *testing.T) {
	id := identitytest.Start(t, identitytest.Options{})
	c := newClients(t, id)
	tn, other := id.CreateTenant(t, "acme"), id.CreateTenant(t, "other")
	token := id.Token(t, tn.OwnerKey)
	otherToken := id.Token(t, other.OwnerKey)
	op := as(t, id.OperatorToken(t))
	get := func(tok, tenant string) error {
		_, err := c.tenants.GetTenant(as(t, tok), &identityv1.GetTenantRequest{TenantId: tenant})
		return err
	}
	issue := func(key string) error {
		_, err := c.tokens.IssueToken(testCtx(t), &identityv1.IssueTokenRequest{Credential: &identityv1.IssueTokenRequest_ApiKey{ApiKey: key}})
		return err
	}
	if err := get(token, tn.ID); err != nil {
		t.Fatalf("before suspension: %v", err)
	}

	// The tenant's own owner pulls the switch (tenant.manage).
	if _, err := c.tenants.SuspendTenant(as(t, token), &identityv1.SuspendTenantRequest{TenantId: tn.ID, Reason: "incident 42"}); err != nil {
		t.Fatalf("SuspendTenant: %v", err)
	}
	eventually(t, 5*time.Second, func() error {
		if err := get(token, tn.ID); code(err) != codes.PermissionDenied || reason(err) != apierr.ReasonTenantSuspended {
			return errors.Join(errStillAccepted, err)
		}
		return nil
	})
	err := issue(tn.OwnerKey)
	wantCode(t, err, codes.PermissionDenied)
	if reason(err) != apierr.ReasonTenantSuspended {
		t.Fatalf("IssueToken reason %q, want %s", reason(err), apierr.ReasonTenantSuspended)
	}
	// The kill switch is per tenant.
	if err := get(otherToken, other.ID); err != nil {
		t.Fatalf("another tenant is affected: %v", err)
	}
	// Only an operator can resume (the tenant's tokens are refused).
	_, err = c.tenants.ResumeTenant(as(t, token), &identityv1.ResumeTenantRequest{TenantId: tn.ID})
	wantCode(t, err, codes.PermissionDenied)
	if _, err := c.tenants.ResumeTenant(op, &identityv1.ResumeTenantRequest{TenantId: tn.ID}); err != nil {
		t.Fatalf("ResumeTenant: %v", err)
	}
	eventually(t, 5*time.Second, func() error { return get(token, tn.ID) })
	if err := issue(tn.OwnerKey); err != nil {
		t.Fatalf("IssueToken after resume: %v", err)
	}

	// Deletion: refused at once, idempotent, and cannot be resumed.
	if _, err := c.tenants.DeleteTenant(as(t, token), &identityv1.DeleteTenantRequest{TenantId: tn.ID}); err != nil {
		t.Fatalf("DeleteTenant: %v", err)
	}
	eventually(t, 5*time.Second, func() error {
		if code(get(token, tn.ID)) != codes.PermissionDenied {
			return errStillAccepted
		}
		return nil
	})
	wantCode(t, issue(tn.OwnerKey), codes.PermissionDenied)
	del, err := c.tenants.DeleteTenant(op, &identityv1.DeleteTenantRequest{TenantId: tn.ID})
	if err != nil || del.GetTenant().GetStatus() != identityv1.TenantStatus_TENANT_STATUS_DELETING {
		t.Fatalf("second DeleteTenant: %v, %v", del, err)
	}
	_, err = c.tenants.ResumeTenant(op, &identityv1.ResumeTenantRequest{TenantId: tn.ID})
	wantCode(t, err, codes.FailedPrecondition)
	_, err = c.tenants.SuspendTenant(op, &identityv1.SuspendTenantRequest{TenantId: tn.ID})
	wantCode(t, err, codes.FailedPrecondition)

	// Status changes went to the outbox with the changes: suspended, resumed, deleting — once each.
	rows, err := id.DB.SuperPool(t).Query(testCtx(t), `SELECT event_type FROM outbox WHERE tenant_id = $1 AND event_type <> 'tenant.created' ORDER BY created_at`, tn.ID)
	if err != nil {
		t.Fatal(err)
	}
	var events []string
	for rows.Next() {
		var e string
		if err := rows.Scan(&e); err != nil {
			t.Fatal(err)
		}
		events = append(events, e)
	}
	if got := strings.Join(events, ","); got != "tenant.suspended,tenant.resumed,tenant.deleting" {
		t.Fatalf("outbox events %s", got)
	}
}

// TestAPIKeyRefusals: IssueToken refuses revoked and expired keys, keys of removed members and
// of deleted service accounts, and malformed or tampered keys — all with the same vague
// Unauthenticated.
func TestAPIKeyRefusals(t *testing.T) {
	clk := &clock{}
	id := identitytest.Start(t, identitytest.Options{Now: clk.Now})
	c := newClients(t, id)
	tn := id.CreateTenant(t, "acme")
	owner := as(t, id.Token(t, tn.OwnerKey))

	newSA := func(name string) string {
		sa, err := c.accounts.CreateServiceAccount(owner, &identityv1.CreateServiceAccountRequest{TenantId: tn.ID, Name: name, Scopes: []string{"members.read"}})
		if err != nil {
			t.Fatal(err)
		}
		return sa.GetServiceAccount().GetServiceAccountId()
	}
	newKey := func(saID string, expires time.Time) *identityv1.CreateApiKeyResponse {
		req := &identityv1.CreateApiKeyRequest{TenantId: tn.ID, Owner: &identityv1.CreateApiKeyRequest_ServiceAccountId{ServiceAccountId: saID}}
		if !expires.IsZero() {
			req.ExpireTime = timestamppb.New(expires)
		}
		k, err := c.accounts.CreateApiKey(owner, req)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	issue := func(key string) error {
		_, err := c.tokens.IssueToken(testCtx(t), &identityv1.IssueTokenRequest{Credential: &identityv1.IssueTokenRequest_ApiKey{ApiKey: key}})
		return err
	}

	saID := newSA("bot")
	revoked := newKey(saID, time.Time{})
	if err := issue(revoked.GetSecret()); err != nil {
		t.Fatalf("fresh key: %v", err)
	}
	r, err := c.accounts.RevokeApiKey(owner, &identityv1.RevokeApiKeyRequest{TenantId: tn.ID, ApiKeyId: revoked.GetApiKey().GetApiKeyId()})
	if err != nil || r.GetApiKey().GetRevokeTime() == nil {
		t.Fatalf("RevokeApiKey: %v, %v", r, err)
	}
	again, err := c.accounts.RevokeApiKey(owner, &identityv1.RevokeApiKeyRequest{TenantId: tn.ID, ApiKeyId: revoked.GetApiKey().GetApiKeyId()})
	if err != nil || !again.GetApiKey().GetRevokeTime().AsTime().Equal(r.GetApiKey().GetRevokeTime().AsTime()) {
		t.Fatalf("RevokeApiKey is not idempotent: %v, %v", again, err)
	}

	expiring := newKey(saID, clk.Now().Add(time.Hour))
	if err := issue(expiring.GetSecret()); err != nil {
		t.Fatalf("unexpired key: %v", err)
	}

	deletedSA := newSA("doomed")
	deletedKey := newKey(deletedSA, time.Time{})
	if _, err := c.accounts.DeleteServiceAccount(owner, &identityv1.DeleteServiceAccountRequest{TenantId: tn.ID, ServiceAccountId: deletedSA}); err != nil {
		t.Fatal(err)
	}

	// A member with their own key, then removed.
	bob, err := c.members.AddMember(owner, &identityv1.AddMemberRequest{TenantId: tn.ID, Email: "bob@acme.example", Role: identityv1.Role_ROLE_MEMBER})
	if err != nil {
		t.Fatal(err)
	}
	bobKey, err := c.accounts.CreateApiKey(as(t, id.UserToken(t, tn.ID, bob.GetMember().GetUserId())), &identityv1.CreateApiKeyRequest{
		TenantId: tn.ID, Owner: &identityv1.CreateApiKeyRequest_UserId{UserId: bob.GetMember().GetUserId()},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := issue(bobKey.GetSecret()); err != nil {
		t.Fatalf("member key: %v", err)
	}
	if _, err := c.members.RemoveMember(owner, &identityv1.RemoveMemberRequest{TenantId: tn.ID, UserId: bob.GetMember().GetUserId()}); err != nil {
		t.Fatal(err)
	}

	clk.Advance(2 * time.Hour)
	good := newKey(saID, time.Time{}).GetSecret()
	last := good[len(good)-1:]
	flip := "A"
	if last == "A" {
		flip = "B"
	}
	cases := map[string]string{
		"revoked":                  revoked.GetSecret(),
		"expired":                  expiring.GetSecret(),
		"deleted service account":  deletedKey.GetSecret(),
		"removed member":           bobKey.GetSecret(),
		"secret tampered":          good[:len(good)-1] + flip,
		"secret truncated":         good[:len(good)-5],
		"unknown lookup id":        good[:4+33] + "0000000000000000" + good[4+33+16:],
		"not a key":                "hunter2",
		"wrong prefix":             "xyz" + good[3:],
		"uppercase tenant":         strings.ToUpper(good[:36]) + good[36:],
		"other tenant, same parts": swapTenant(t, good, id.CreateTenant(t, "other").ID),
	}
	var first string
	for name, key := range cases {
		t.Run(name, func(t *testing.T) {
			err := issue(key)
			wantCode(t, err, codes.Unauthenticated)
			msg := err.Error()
			if first == "" {
				first = msg
			} else if msg != first {
				t.Fatalf("refusals differ: %q vs %q (they must not say why)", msg, first)
			}
		})
	}
	if err := issue(good); err != nil {
		t.Fatalf("the untampered key: %v", err)
	}

	// A key whose expiry lies in the past or too far ahead is refused at creation.
	for _, exp := range []time.Time{clk.Now().Add(-time.Minute), clk.Now().Add(2 * 366 * 24 * time.Hour)} {
		_, err := c.accounts.CreateApiKey(owner, &identityv1.CreateApiKeyRequest{
			TenantId: tn.ID, Owner: &identityv1.CreateApiKeyRequest_ServiceAccountId{ServiceAccountId: saID}, ExpireTime: timestamppb.New(exp),
		})
		wantCode(t, err, codes.InvalidArgument)
	}
	// Keys for deleted accounts or non-members cannot be created either.
	_, err = c.accounts.CreateApiKey(owner, &identityv1.CreateApiKeyRequest{TenantId: tn.ID, Owner: &identityv1.CreateApiKeyRequest_ServiceAccountId{ServiceAccountId: deletedSA}})
	wantCode(t, err, codes.NotFound)
	// The service account token carries exactly the account's scopes.
	saTok := id.Token(t, good, launch.Audience)
	_, err = c.members.ListMembers(as(t, saTok), &identityv1.ListMembersRequest{TenantId: tn.ID})
	if err != nil {
		t.Fatalf("service account with members.read: %v", err)
	}
	_, err = c.accounts.ListServiceAccounts(as(t, saTok), &identityv1.ListServiceAccountsRequest{TenantId: tn.ID})
	wantCode(t, err, codes.PermissionDenied)
}
