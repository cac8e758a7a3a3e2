package launch_test

import (
	"context"
	"strings"
	"testing"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	"github.com/bulkhead/bulkhead/services/identity/identitytest"
	"github.com/bulkhead/bulkhead/services/identity/launch"
)

// target names the resources a cross-tenant call aims at.
type target struct {
	TenantID, MemberID, SAID, KeyID string
	// Key is an API key string for IssueToken.
	Key string
}

// crossTenantCase is one identity RPC called with tenant A's owner token against target.
type crossTenantCase struct {
	call func(ctx context.Context, c clients, to target) error
	// want is the code for B's resources (and, identically, for missing ones).
	want codes.Code
	// resources marks RPCs that address a resource by id inside a tenant: they are also called
	// with A's own tenant id and B's resource ids, which only row-level security stops.
	resources bool
	// public RPCs name no tenant; why says why there is nothing to cross.
	why string
}

// crossTenantCases has a row for every RPC of bulkhead.identity.v1; TestCrossTenant fails for
// an RPC without one.
func crossTenantCases() map[string]crossTenantCase {
	return map[string]crossTenantCase{
		identityv1.TenantService_CreateTenant_FullMethodName: {why: "public onboarding; names no existing tenant"},
		identityv1.TenantService_GetTenant_FullMethodName: {want: codes.NotFound, call: func(ctx context.Context, c clients, to target) error {
			_, err := c.tenants.GetTenant(ctx, &identityv1.GetTenantRequest{TenantId: to.TenantID})
			return err
		}},
		identityv1.TenantService_ListTenants_FullMethodName: {want: codes.PermissionDenied, call: func(ctx context.Context, c clients, _ target) error {
			_, err := c.tenants.ListTenants(ctx, &identityv1.ListTenantsRequest{})
			return err
		}},
		identityv1.TenantService_SuspendTenant_FullMethodName: {want: codes.NotFound, call: func(ctx context.Context, c clients, to target) error {
			_, err := c.tenants.SuspendTenant(ctx, &identityv1.SuspendTenantRequest{TenantId: to.TenantID, Reason: "x"})
			return err
		}},
		identityv1.TenantService_ResumeTenant_FullMethodName: {want: codes.PermissionDenied, call: func(ctx context.Context, c clients, to target) error {
			_, err := c.tenants.ResumeTenant(ctx, &identityv1.ResumeTenantRequest{TenantId: to.TenantID})
			return err
		}},
		identityv1.TenantService_DeleteTenant_FullMethodName: {want: codes.NotFound, call: func(ctx context.Context, c clients, to target) error {
			_, err := c.tenants.DeleteTenant(ctx, &identityv1.DeleteTenantRequest{TenantId: to.TenantID})
			return err
		}},
		identityv1.TenantService_GetTenantStatus_FullMethodName: {want: codes.PermissionDenied, call: func(ctx context.Context, c clients, to target) error {
			_, err := c.tenants.GetTenantStatus(ctx, &identityv1.GetTenantStatusRequest{TenantId: to.TenantID})
			return err
		}},

		identityv1.MemberService_AddMember_FullMethodName: {want: codes.NotFound, call: func(ctx context.Context, c clients, to target) error {
			_, err := c.members.AddMember(ctx, &identityv1.AddMemberRequest{TenantId: to.TenantID, Email: "mallory@evil.example", Role: identityv1.Role_ROLE_OWNER})
			return err
		}},
		identityv1.MemberService_GetMember_FullMethodName: {want: codes.NotFound, resources: true, call: func(ctx context.Context, c clients, to target) error {
			_, err := c.members.GetMember(ctx, &identityv1.GetMemberRequest{TenantId: to.TenantID, UserId: to.MemberID})
			return err
		}},
		identityv1.MemberService_ListMembers_FullMethodName: {want: codes.NotFound, call: func(ctx context.Context, c clients, to target) error {
			_, err := c.members.ListMembers(ctx, &identityv1.ListMembersRequest{TenantId: to.TenantID})
			return err
		}},
		identityv1.MemberService_UpdateMemberRole_FullMethodName: {want: codes.NotFound, resources: true, call: func(ctx context.Context, c clients, to target) error {
			_, err := c.members.UpdateMemberRole(ctx, &identityv1.UpdateMemberRoleRequest{TenantId: to.TenantID, UserId: to.MemberID, Role: identityv1.Role_ROLE_VIEWER})
			return err
		}},
		identityv1.MemberService_RemoveMember_FullMethodName: {want: codes.NotFound, resources: true, call: func(ctx context.Context, c clients, to target) error {
			_, err := c.members.RemoveMember(ctx, &identityv1.RemoveMemberRequest{TenantId: to.TenantID, UserId: to.MemberID})
			return err
		}},

		identityv1.ServiceAccountService_CreateServiceAccount_FullMethodName: {want: codes.NotFound, call: func(ctx context.Context, c clients, to target) error {
			_, err := c.accounts.CreateServiceAccount(ctx, &identityv1.CreateServiceAccountRequest{TenantId: to.TenantID, Name: "implant", Scopes: []string{"members.read"}})
			return err
		}},
		identityv1.ServiceAccountService_GetServiceAccount_FullMethodName: {want: codes.NotFound, resources: true, call: func(ctx context.Context, c clients, to target) error {
			_, err := c.accounts.GetServiceAccount(ctx, &identityv1.GetServiceAccountRequest{TenantId: to.TenantID, ServiceAccountId: to.SAID})
			return err
		}},
		identityv1.ServiceAccountService_ListServiceAccounts_FullMethodName: {want: codes.NotFound, call: func(ctx context.Context, c clients, to target) error {
			_, err := c.accounts.ListServiceAccounts(ctx, &identityv1.ListServiceAccountsRequest{TenantId: to.TenantID})
			return err
		}},
		identityv1.ServiceAccountService_DeleteServiceAccount_FullMethodName: {want: codes.NotFound, resources: true, call: func(ctx context.Context, c clients, to target) error {
			_, err := c.accounts.DeleteServiceAccount(ctx, &identityv1.DeleteServiceAccountRequest{TenantId: to.TenantID, ServiceAccountId: to.SAID})
			return err
		}},
		identityv1.ServiceAccountService_CreateApiKey_FullMethodName: {want: codes.NotFound, resources: true, call: func(ctx context.Context, c clients, to target) error {
			_, err := c.accounts.CreateApiKey(ctx, &identityv1.CreateApiKeyRequest{TenantId: to.TenantID, Owner: &identityv1.CreateApiKeyRequest_ServiceAccountId{ServiceAccountId: to.SAID}})
			return err
		}},
		identityv1.ServiceAccountService_ListApiKeys_FullMethodName: {want: codes.NotFound, call: func(ctx context.Context, c clients, to target) error {
			_, err := c.accounts.ListApiKeys(ctx, &identityv1.ListApiKeysRequest{TenantId: to.TenantID})
			return err
		}},
		identityv1.ServiceAccountService_RevokeApiKey_FullMethodName: {want: codes.NotFound, resources: true, call: func(ctx context.Context, c clients, to target) error {
			_, err := c.accounts.RevokeApiKey(ctx, &identityv1.RevokeApiKeyRequest{TenantId: to.TenantID, ApiKeyId: to.KeyID})
			return err
		}},

		// The API key names its tenant; a key whose tenant part was swapped is looked up in
		// that tenant's scope and never matches (see TestForgedKeys for more shapes).
		identityv1.TokenService_IssueToken_FullMethodName: {want: codes.Unauthenticated, call: func(ctx context.Context, c clients, to target) error {
			_, err := c.tokens.IssueToken(ctx, &identityv1.IssueTokenRequest{Credential: &identityv1.IssueTokenRequest_ApiKey{ApiKey: to.Key}})
			return err
		}},
		identityv1.TokenService_ExchangeToken_FullMethodName: {want: codes.PermissionDenied, call: func(ctx context.Context, c clients, to target) error {
			_, err := c.tokens.ExchangeToken(ctx, &identityv1.ExchangeTokenRequest{TenantId: to.TenantID, UserId: to.MemberID, Audience: []string{"bulkhead.vault"}})
			return err
		}},
		identityv1.TokenService_GetJwks_FullMethodName: {why: "public key set; holds no tenant data"},
		// Only Bulkhead services holding events.read read the outbox; a tenant's token never does.
		identityv1.EventService_ListEvents_FullMethodName: {want: codes.PermissionDenied, call: func(ctx context.Context, c clients, _ target) error {
			_, err := identityv1.NewEventServiceClient(c.conn).ListEvents(ctx, &identityv1.ListEventsRequest{})
			return err
		}},
		identityv1.TokenService_RotateSigningKey_FullMethodName: {want: codes.PermissionDenied, call: func(ctx context.Context, c clients, _ target) error {
			_, err := c.tokens.RotateSigningKey(ctx, &identityv1.RotateSigningKeyRequest{})
			return err
		}},
	}
}

// identityMethods lists every RPC of the bulkhead.identity.v1 package from the registered
// descriptors, so a new RPC (or service) shows up here without anyone remembering it.
func identityMethods(t *testing.T) []string {
	var out []string
	protoregistry.GlobalFiles.RangeFilesByPackage("bulkhead.identity.v1", func(fd protoreflect.FileDescriptor) bool {
		if fd.Package() != "bulkhead.identity.v1" {
			return true
		}
		for i := range fd.Services().Len() {
			sd := fd.Services().Get(i)
			for j := range sd.Methods().Len() {
				out = append(out, "/"+string(sd.FullName())+"/"+string(sd.Methods().Get(j).Name()))
			}
		}
		return true
	})
	if len(out) < 20 {
		t.Fatalf("found only %d identity RPCs; is the generated code linked in?", len(out))
	}
	return out
}

// swapTenant rewrites an API key to name another tenant, keeping its lookup id and secret.
func swapTenant(t *testing.T, key, tenantID string) string {
	t.Helper()
	parts := strings.SplitN(key, "_", 3) // bhk, tenant, rest
	u := uuid.MustParse(tenantID)
	return parts[0] + "_" + strings.ReplaceAll(u.String(), "-", "") + "_" + parts[2]
}

// TestCrossTenant: a token of tenant A gets NotFound for B's tenant, members, service accounts
// and API keys — byte-for-byte the answer for ones that do not exist — on every identity RPC,
// and B is unchanged afterwards.
func TestCrossTenant(t *testing.T) {
	id := identitytest.Start(t, identitytest.Options{})
	c := newClients(t, id)
	a, b := id.CreateTenant(t, "a"), id.CreateTenant(t, "b")
	bOwner := as(t, id.Token(t, b.OwnerKey))
	bMember, err := c.members.AddMember(bOwner, &identityv1.AddMemberRequest{TenantId: b.ID, Email: "bob@b.example", Role: identityv1.Role_ROLE_ADMIN})
	if err != nil {
		t.Fatal(err)
	}
	bSA, err := c.accounts.CreateServiceAccount(bOwner, &identityv1.CreateServiceAccountRequest{TenantId: b.ID, Name: "b-bot", Scopes: []string{"members.read"}})
	if err != nil {
		t.Fatal(err)
	}
	bKey, err := c.accounts.CreateApiKey(bOwner, &identityv1.CreateApiKeyRequest{TenantId: b.ID, Owner: &identityv1.CreateApiKeyRequest_ServiceAccountId{ServiceAccountId: bSA.GetServiceAccount().GetServiceAccountId()}})
	if err != nil {
		t.Fatal(err)
	}
	aToken := id.Token(t, a.OwnerKey)

	ofB := target{
		TenantID: b.ID, MemberID: bMember.GetMember().GetUserId(), SAID: bSA.GetServiceAccount().GetServiceAccountId(),
		KeyID: bKey.GetApiKey().GetApiKeyId(),
		Key:   swapTenant(t, a.OwnerKey, b.ID), // A's secret presented as B's key
	}
	missing := target{
		TenantID: uuid.NewString(), MemberID: uuid.NewString(), SAID: uuid.NewString(), KeyID: uuid.NewString(),
		Key: swapTenant(t, a.OwnerKey, uuid.NewString()),
	}
	// A's own tenant id with B's resource ids: the handler's tenant check passes, so only
	// row-level security stands between A and B's rows.
	inA := ofB
	inA.TenantID = a.ID
	inAMissing := missing
	inAMissing.TenantID = a.ID

	cases := crossTenantCases()
	for _, method := range identityMethods(t) {
		tc, ok := cases[method]
		if !ok {
			t.Errorf("%s has no cross-tenant case: add one to crossTenantCases", method)
			continue
		}
		t.Run(strings.TrimPrefix(method, "/bulkhead.identity.v1."), func(t *testing.T) {
			if tc.call == nil {
				t.Skip(tc.why)
			}
			check := func(to, absent target) {
				t.Helper()
				errB := tc.call(as(t, aToken), c, to)
				wantCode(t, errB, tc.want)
				errMissing := tc.call(as(t, aToken), c, absent)
				sb, _ := status.FromError(errB)
				sm, _ := status.FromError(errMissing)
				if !proto.Equal(sb.Proto(), sm.Proto()) {
					t.Fatalf("answer for B's resource differs from a missing one:\n B:       %v\n missing: %v", sb.Proto(), sm.Proto())
				}
			}
			check(ofB, missing)
			if tc.resources {
				check(inA, inAMissing)
			}
		})
	}

	// B is untouched: same members, account and key, still active, still usable.
	if st, err := c.tenants.GetTenant(bOwner, &identityv1.GetTenantRequest{TenantId: b.ID}); err != nil || st.GetTenant().GetStatus() != identityv1.TenantStatus_TENANT_STATUS_ACTIVE {
		t.Fatalf("B after the attack: %v, %v", st, err)
	}
	ms, err := c.members.ListMembers(bOwner, &identityv1.ListMembersRequest{TenantId: b.ID})
	if err != nil || len(ms.GetMembers()) != 2 || ms.GetMembers()[1].GetRole() != identityv1.Role_ROLE_ADMIN {
		t.Fatalf("B's members after the attack: %v, %v", ms, err)
	}
	if _, err := c.accounts.GetServiceAccount(bOwner, &identityv1.GetServiceAccountRequest{TenantId: b.ID, ServiceAccountId: ofB.SAID}); err != nil {
		t.Fatalf("B's service account after the attack: %v", err)
	}
	if tok := id.Token(t, bKey.GetSecret(), launch.Audience); tok == "" {
		t.Fatal("B's key no longer works")
	}
	sas, err := c.accounts.ListServiceAccounts(bOwner, &identityv1.ListServiceAccountsRequest{TenantId: b.ID})
	if err != nil || len(sas.GetServiceAccounts()) != 1 {
		t.Fatalf("B's service accounts after the attack: %v, %v", sas, err)
	}
}
