package launch_test

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"

	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	"github.com/bulkhead/bulkhead/services/identity/identitytest"
)

// TestRoles checks the role rules on real tokens: what each role may not do, ownership rules,
// and that a tenant never loses its last owner.
func TestRoles(t *testing.T) {
	id := identitytest.Start(t, identitytest.Options{})
	c := newClients(t, id)
	tn := id.CreateTenant(t, "acme")
	owner := id.Token(t, tn.OwnerKey)

	users := map[identityv1.Role]string{}
	for _, role := range []identityv1.Role{identityv1.Role_ROLE_ADMIN, identityv1.Role_ROLE_MEMBER, identityv1.Role_ROLE_VIEWER} {
		m, err := c.members.AddMember(as(t, owner), &identityv1.AddMemberRequest{
			TenantId: tn.ID, Email: role.String() + "@acme.example", Role: role,
		})
		if err != nil {
			t.Fatalf("AddMember %v: %v", role, err)
		}
		users[role] = m.GetMember().GetUserId()
	}
	tokenOf := func(role identityv1.Role) string { return id.UserToken(t, tn.ID, users[role]) }
	admin, member, viewer := tokenOf(identityv1.Role_ROLE_ADMIN), tokenOf(identityv1.Role_ROLE_MEMBER), tokenOf(identityv1.Role_ROLE_VIEWER)

	addMember := func(role identityv1.Role) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := c.members.AddMember(ctx, &identityv1.AddMemberRequest{TenantId: tn.ID, Email: "new-" + role.String() + "@acme.example", Role: role})
			return err
		}
	}
	setRole := func(user string, role identityv1.Role) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := c.members.UpdateMemberRole(ctx, &identityv1.UpdateMemberRoleRequest{TenantId: tn.ID, UserId: user, Role: role})
			return err
		}
	}
	remove := func(user string) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := c.members.RemoveMember(ctx, &identityv1.RemoveMemberRequest{TenantId: tn.ID, UserId: user})
			return err
		}
	}
	createSA := func(scopes ...string) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := c.accounts.CreateServiceAccount(ctx, &identityv1.CreateServiceAccountRequest{TenantId: tn.ID, Name: "bot", Scopes: scopes})
			return err
		}
	}
	cases := []struct {
		name  string
		token string
		call  func(context.Context) error
		want  codes.Code
	}{
		{"viewer cannot add members", viewer, addMember(identityv1.Role_ROLE_VIEWER), codes.PermissionDenied},
		{"viewer cannot change roles", viewer, setRole(users[identityv1.Role_ROLE_MEMBER], identityv1.Role_ROLE_ADMIN), codes.PermissionDenied},
		{"viewer cannot remove members", viewer, remove(users[identityv1.Role_ROLE_MEMBER]), codes.PermissionDenied},
		{"member cannot manage members", member, addMember(identityv1.Role_ROLE_VIEWER), codes.PermissionDenied},
		{"member cannot create service accounts", member, createSA("members.read"), codes.PermissionDenied},
		{"member cannot suspend the tenant", member, func(ctx context.Context) error {
			_, err := c.tenants.SuspendTenant(ctx, &identityv1.SuspendTenantRequest{TenantId: tn.ID})
			return err
		}, codes.PermissionDenied},
		{"admin cannot add an owner", admin, addMember(identityv1.Role_ROLE_OWNER), codes.PermissionDenied},
		{"admin cannot promote to owner", admin, setRole(users[identityv1.Role_ROLE_MEMBER], identityv1.Role_ROLE_OWNER), codes.PermissionDenied},
		{"admin cannot promote itself to owner", admin, setRole(users[identityv1.Role_ROLE_ADMIN], identityv1.Role_ROLE_OWNER), codes.PermissionDenied},
		{"admin cannot demote the owner", admin, setRole(tn.OwnerID, identityv1.Role_ROLE_VIEWER), codes.PermissionDenied},
		{"admin cannot remove the owner", admin, remove(tn.OwnerID), codes.PermissionDenied},
		{"admin cannot delete the tenant", admin, func(ctx context.Context) error {
			_, err := c.tenants.DeleteTenant(ctx, &identityv1.DeleteTenantRequest{TenantId: tn.ID})
			return err
		}, codes.PermissionDenied},
		{"admin cannot grant a scope it lacks", admin, createSA("tenant.delete"), codes.PermissionDenied},
		{"unknown scope", owner, createSA("members.read", "root"), codes.InvalidArgument},
		{"service-only scope", owner, createSA("credentials.read"), codes.InvalidArgument},
		{"last owner cannot be removed", owner, remove(tn.OwnerID), codes.FailedPrecondition},
		{"last owner cannot be demoted", owner, setRole(tn.OwnerID, identityv1.Role_ROLE_ADMIN), codes.FailedPrecondition},
		{"duplicate member", owner, func(ctx context.Context) error {
			_, err := c.members.AddMember(ctx, &identityv1.AddMemberRequest{TenantId: tn.ID, Email: "ROLE_VIEWER@ACME.EXAMPLE", Role: identityv1.Role_ROLE_VIEWER})
			return err
		}, codes.AlreadyExists},
		{"invalid e-mail", owner, func(ctx context.Context) error {
			_, err := c.members.AddMember(ctx, &identityv1.AddMemberRequest{TenantId: tn.ID, Email: "not an address", Role: identityv1.Role_ROLE_VIEWER})
			return err
		}, codes.InvalidArgument},
		{"member cannot create a key for another user", member, func(ctx context.Context) error {
			_, err := c.accounts.CreateApiKey(ctx, &identityv1.CreateApiKeyRequest{TenantId: tn.ID, Owner: &identityv1.CreateApiKeyRequest_UserId{UserId: users[identityv1.Role_ROLE_VIEWER]}})
			return err
		}, codes.PermissionDenied},
		// Allowed calls, so the table proves the refusals are about the rule, not the setup.
		{"admin adds a viewer", admin, addMember(identityv1.Role_ROLE_VIEWER), codes.OK},
		{"admin creates a service account within its permissions", admin, createSA("members.read", "connections.manage"), codes.OK},
		{"viewer lists members", viewer, func(ctx context.Context) error {
			_, err := c.members.ListMembers(ctx, &identityv1.ListMembersRequest{TenantId: tn.ID})
			return err
		}, codes.OK},
		{"member creates its own key", member, func(ctx context.Context) error {
			_, err := c.accounts.CreateApiKey(ctx, &identityv1.CreateApiKeyRequest{TenantId: tn.ID, Owner: &identityv1.CreateApiKeyRequest_UserId{UserId: users[identityv1.Role_ROLE_MEMBER]}})
			return err
		}, codes.OK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantCode(t, tc.call(as(t, tc.token)), tc.want)
		})
	}

	// With a second owner, the first may step down; then the last one may not.
	if err := setRole(users[identityv1.Role_ROLE_ADMIN], identityv1.Role_ROLE_OWNER)(as(t, owner)); err != nil {
		t.Fatalf("owner promotes admin: %v", err)
	}
	if err := setRole(tn.OwnerID, identityv1.Role_ROLE_MEMBER)(as(t, owner)); err != nil {
		t.Fatalf("first owner steps down: %v", err)
	}
	newOwner := id.UserToken(t, tn.ID, users[identityv1.Role_ROLE_ADMIN])
	wantCode(t, remove(users[identityv1.Role_ROLE_ADMIN])(as(t, newOwner)), codes.FailedPrecondition)
}
