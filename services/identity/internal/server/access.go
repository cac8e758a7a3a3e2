package server

import (
	"context"

	"github.com/google/uuid"

	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/pkg/authz"
	"github.com/bulkhead/bulkhead/pkg/claims"
)

// caller returns the verified claims the authentication interceptor put in ctx.
func caller(ctx context.Context) (*claims.Claims, error) {
	c, ok := claims.FromContext(ctx)
	if !ok {
		return nil, apierr.Unauthenticated("missing credentials")
	}
	return c, nil
}

// sameTenant compares two tenant ids as UUIDs (a request may spell one in upper case).
func sameTenant(a, b string) bool {
	ua, err := uuid.Parse(a)
	if err != nil {
		return false
	}
	ub, err := uuid.Parse(b)
	return err == nil && ua == ub
}

// ownTenant resolves the tenant a tenant principal's call acts on: always the tenant of its
// verified claims. A request naming any other tenant gets NotFound(resource), the very answer a
// missing resource gets, so nobody learns that another tenant (or its resources) exists.
func ownTenant(ctx context.Context, requested, resource string) (*claims.Claims, string, error) {
	c, err := caller(ctx)
	if err != nil {
		return nil, "", err
	}
	if c.TenantID == "" || !sameTenant(c.TenantID, requested) {
		return nil, "", apierr.NotFound(resource)
	}
	return c, c.TenantID, nil
}

// tenantOrPlatform resolves the tenant of an RPC that tenant principals call on their own
// tenant (with tenantPerm) and platform operators on any tenant (with platformPerm). For an
// operator, the request's tenant id is the one case where a request field names the tenant: the
// operator's platform permission is what authorizes acting on any tenant, and the transaction
// is then scoped to that one tenant, so row-level security still confines it there.
func tenantOrPlatform(ctx context.Context, requested string, tenantPerm, platformPerm authz.Permission) (*claims.Claims, string, error) {
	c, err := caller(ctx)
	if err != nil {
		return nil, "", err
	}
	if c.Kind == claims.KindOperator {
		if !authz.Has(c, platformPerm) {
			return nil, "", apierr.PermissionDenied("missing permission %s", platformPerm)
		}
		id, err := uuid.Parse(requested)
		if err != nil {
			return nil, "", apierr.NotFound("tenant")
		}
		return c, id.String(), nil
	}
	c, tenant, err := ownTenant(ctx, requested, "tenant")
	if err != nil {
		return nil, "", err
	}
	if !authz.Has(c, tenantPerm) {
		return nil, "", apierr.PermissionDenied("missing permission %s", tenantPerm)
	}
	return c, tenant, nil
}
