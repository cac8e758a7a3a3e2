// Package authz decides whether a verified principal may call a method: the one table of roles
// to permissions, the effective permissions of each kind of principal, and per-method rules.
// Authentication (pkg/authn) has already happened; authz only reads claims from the context.
package authz

import (
	"slices"

	"github.com/bulkhead/bulkhead/pkg/claims"
)

// Permission names one capability. Values are the strings that appear in `scope` claims.
type Permission string

// Tenant permissions: granted to users through roles, and to service accounts through scopes.
const (
	TenantRead            Permission = "tenant.read"
	TenantManage          Permission = "tenant.manage"
	TenantDelete          Permission = "tenant.delete"
	MembersRead           Permission = "members.read"
	MembersManage         Permission = "members.manage"
	ServiceAccountsRead   Permission = "service_accounts.read"
	ServiceAccountsManage Permission = "service_accounts.manage"
	IntegrationsRead      Permission = "integrations.read"
	IntegrationsManage    Permission = "integrations.manage"
	ConnectionsRead       Permission = "connections.read"
	ConnectionsUse        Permission = "connections.use"
	ConnectionsManage     Permission = "connections.manage"
	SyncsRead             Permission = "syncs.read"
	SyncsManage           Permission = "syncs.manage"
	RecordsRead           Permission = "records.read"
	WebhooksManage        Permission = "webhooks.manage"
	AuditRead             Permission = "audit.read"
)

// Service permissions: only Bulkhead services hold them, as scopes of their own tokens. No role
// grants them and a service account's scopes are cut down to tenant permissions, so no tenant
// principal can obtain one.
const (
	CredentialsRead  Permission = "credentials.read"
	CredentialsWrite Permission = "credentials.write"
	TokensExchange   Permission = "tokens.exchange"
	TenantsStatus    Permission = "tenants.status"
	VaultProvision   Permission = "vault.provision"
	// EventsRead reads identity's outbox across tenants (EventService.ListEvents).
	EventsRead Permission = "events.read"
	// TenantsOffboard lets a service keep acting for a tenant that is DELETING, to finish
	// offboarding it: identity (the saga's orchestrator) calls the participants with it, and
	// the connection service exchanges it for the tenant tokens it revokes connections with.
	// Every other principal of a DELETING tenant is refused as for a suspension.
	TenantsOffboard Permission = "tenants.offboard"
)

// Operator permissions: only platform operators (`op:` principals) hold them.
const (
	PlatformTenantsRead   Permission = "platform.tenants.read"
	PlatformTenantsManage Permission = "platform.tenants.manage"
)

// Role is a tenant role carried in a user's `roles` claim.
type Role string

// The tenant roles, from most to least privileged.
const (
	RoleOwner  Role = "owner"
	RoleAdmin  Role = "admin"
	RoleMember Role = "member"
	RoleViewer Role = "viewer"
)

// tenantPermissions lists every tenant permission; owner holds them all.
var tenantPermissions = []Permission{
	TenantRead, TenantManage, TenantDelete,
	MembersRead, MembersManage,
	ServiceAccountsRead, ServiceAccountsManage,
	IntegrationsRead, IntegrationsManage,
	ConnectionsRead, ConnectionsUse, ConnectionsManage,
	SyncsRead, SyncsManage,
	RecordsRead,
	WebhooksManage,
	AuditRead,
}

var servicePermissions = []Permission{CredentialsRead, CredentialsWrite, TokensExchange, TenantsStatus, VaultProvision, EventsRead, TenantsOffboard}

var operatorPermissions = []Permission{PlatformTenantsRead, PlatformTenantsManage}

// readPermissions are what a viewer may do: look, never change.
var readPermissions = []Permission{
	TenantRead, MembersRead, ServiceAccountsRead, IntegrationsRead, ConnectionsRead, SyncsRead, RecordsRead,
}

// rolePermissions is THE table of roles to permissions. Nothing else grants a tenant permission
// to a user. It is built once and never modified.
//
// member may manage connections because members create their own user-level connections; the
// connection service enforces that a member only touches connections they own.
var rolePermissions = map[Role]set{
	RoleOwner:  newSet(tenantPermissions...),
	RoleAdmin:  newSet(slices.DeleteFunc(slices.Clone(tenantPermissions), func(p Permission) bool { return p == TenantDelete })...),
	RoleMember: newSet(append(slices.Clone(readPermissions), ConnectionsUse, ConnectionsManage)...),
	RoleViewer: newSet(readPermissions...),
}

var (
	tenantSet = newSet(tenantPermissions...)
	knownSet  = newSet(slices.Concat(tenantPermissions, servicePermissions, operatorPermissions)...)
	allRoles  = []Role{RoleOwner, RoleAdmin, RoleMember, RoleViewer}
)

type set map[Permission]struct{}

func newSet(ps ...Permission) set {
	s := make(set, len(ps))
	for _, p := range ps {
		s[p] = struct{}{}
	}
	return s
}

func (s set) has(p Permission) bool { _, ok := s[p]; return ok }

// Roles returns the tenant roles, most privileged first.
func Roles() []Role { return slices.Clone(allRoles) }

// RolePermissions returns the permissions role grants, sorted; nil for an unknown role.
func RolePermissions(role Role) []Permission {
	s, ok := rolePermissions[role]
	if !ok {
		return nil
	}
	out := make([]Permission, 0, len(s))
	for p := range s {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// IsTenantPermission reports whether p is a tenant permission (one a role or service account
// may hold), as opposed to a service-only or operator-only one.
func IsTenantPermission(p Permission) bool { return tenantSet.has(p) }

// Known reports whether p is a permission this package defines.
func Known(p Permission) bool { return knownSet.has(p) }

// Has reports whether the principal c holds permission p:
//   - a user holds the union of its roles' permissions (unknown roles grant nothing);
//   - a service account holds its scopes that are tenant permissions, so a scope such as
//     "credentials.read" written into a service account's token grants nothing;
//   - a service or an operator holds exactly its scopes.
func Has(c *claims.Claims, p Permission) bool {
	if c == nil || p == "" {
		return false
	}
	switch c.Kind {
	case claims.KindUser:
		for _, r := range c.Roles {
			if rolePermissions[Role(r)].has(p) {
				return true
			}
		}
		return false
	case claims.KindServiceAccount:
		return tenantSet.has(p) && c.HasScope(string(p))
	case claims.KindService, claims.KindOperator:
		return c.HasScope(string(p))
	}
	return false
}

// Effective returns every permission c holds, sorted. Has is the check; this is for display
// (e.g. a "what can I do" endpoint).
func Effective(c *claims.Claims) []Permission {
	var out []Permission
	for p := range knownSet {
		if Has(c, p) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}
