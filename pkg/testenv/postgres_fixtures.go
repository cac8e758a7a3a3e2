package testenv

import (
	"github.com/google/uuid"

	"github.com/bulkhead/bulkhead/pkg/pgtenant"
)

// NewTenantID returns a fresh random tenant UUID. Tests use fresh ids so that they can share a
// server (and Vault) without seeing each other's data.
func NewTenantID() string {
	return uuid.NewString()
}

// NewTenant returns a scope for a fresh tenant, with no user.
func NewTenant() pgtenant.Scope {
	return pgtenant.Scope{TenantID: NewTenantID()}
}

// NewUser returns a scope for a fresh user in tenant.
func NewUser(tenant pgtenant.Scope) pgtenant.Scope {
	return pgtenant.Scope{TenantID: tenant.TenantID, UserID: uuid.NewString()}
}

// TwoTenants returns scopes for two distinct fresh tenants: the usual cast of an isolation
// test, where b tries to reach a's data.
func TwoTenants() (a, b pgtenant.Scope) {
	return NewTenant(), NewTenant()
}
