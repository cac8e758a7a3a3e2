package app

import (
	"context"
	"strings"

	"github.com/google/uuid"

	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/pkg/authz"
	"github.com/bulkhead/bulkhead/pkg/claims"
	"github.com/bulkhead/bulkhead/services/identity/internal/store"
)

// Members are the membership use cases. The caller's permission for the method
// (members.read / members.manage) has been checked; these enforce the ownership rules:
//   - only owners grant or take the owner role (an admin cannot make themselves owner, nor
//     demote or remove an owner);
//   - a tenant always keeps at least one owner (the store checks this inside the transaction).
type Members struct {
	store store.Members
}

// NewMembers returns the membership use cases.
func NewMembers(s store.Members) *Members { return &Members{store: s} }

// isOwner reports whether the caller is an owner of its tenant. Only users have roles: a
// service account never grants ownership, whatever its scopes.
func isOwner(caller *claims.Claims) bool {
	return caller.Kind == claims.KindUser && caller.HasRole(string(authz.RoleOwner))
}

func onlyOwners() error {
	return apierr.PermissionDenied("only owners grant or take the owner role")
}

// Add adds a member (creating the user when the address is new to the tenant).
func (m *Members) Add(ctx context.Context, caller *claims.Claims, tenantID, email, displayName string, role authz.Role) (*store.Member, error) {
	if role == authz.RoleOwner && !isOwner(caller) {
		return nil, onlyOwners()
	}
	mem, err := m.store.AddMember(ctx, tenantID, store.NewMember{
		UserID: uuid.NewString(), Email: strings.TrimSpace(email), DisplayName: displayName, Role: role,
	})
	if err != nil {
		return nil, storeError(err, "member")
	}
	return mem, nil
}

// Get returns a member.
func (m *Members) Get(ctx context.Context, tenantID, userID string) (*store.Member, error) {
	mem, err := m.store.GetMember(ctx, tenantID, userID)
	return mem, storeError(err, "member")
}

// List lists members, oldest first.
func (m *Members) List(ctx context.Context, tenantID string, p PageRequest) ([]store.Member, string, error) {
	page, err := p.page()
	if err != nil {
		return nil, "", err
	}
	ms, next, err := m.store.ListMembers(ctx, tenantID, page)
	if err != nil {
		return nil, "", storeError(err, "member")
	}
	return ms, encodePageToken(next), nil
}

// UpdateRole changes a member's role.
func (m *Members) UpdateRole(ctx context.Context, caller *claims.Claims, tenantID, userID string, role authz.Role) (*store.Member, error) {
	if role == authz.RoleOwner && !isOwner(caller) {
		return nil, onlyOwners()
	}
	mem, err := m.store.UpdateMemberRole(ctx, tenantID, userID, role, func(target store.Member) error {
		if target.Role == authz.RoleOwner && !isOwner(caller) {
			return onlyOwners()
		}
		return nil
	})
	if err != nil {
		return nil, storeError(err, "member")
	}
	return mem, nil
}

// Remove removes a member, revokes the member's API keys and announces it (member.removed),
// atomically.
func (m *Members) Remove(ctx context.Context, caller *claims.Claims, tenantID, userID string) error {
	err := m.store.RemoveMember(ctx, tenantID, userID, func(target store.Member) error {
		if target.Role == authz.RoleOwner && !isOwner(caller) {
			return onlyOwners()
		}
		return nil
	})
	return storeError(err, "member")
}
