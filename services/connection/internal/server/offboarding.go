package server

import (
	"context"

	connectionv1 "github.com/bulkhead/bulkhead/gen/bulkhead/connection/v1"
	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/pkg/claims"
	"github.com/bulkhead/bulkhead/services/connection/internal/app"
)

type offboardingServer struct {
	connectionv1.UnsafeTenantOffboardingServiceServer
	app *app.App
}

// OffboardTenant is identity's tenant-deletion saga step (Policy: tenants.offboard, services
// only, no tenant). The tenant comes from the request — the caller acts on no tenant of its
// own — and the use case checks with identity that it is DELETING.
func (s *offboardingServer) OffboardTenant(ctx context.Context, req *connectionv1.OffboardTenantRequest) (*connectionv1.OffboardTenantResponse, error) {
	// NoTenant admits a token without a tenant; it does not refuse one with a tenant. A
	// service's token for some tenant acts for that tenant, not as the saga.
	if c, ok := claims.FromContext(ctx); !ok || c.TenantID != "" {
		return nil, apierr.PermissionDenied("OffboardTenant is called by a service acting as itself, on no tenant")
	}
	res, err := s.app.OffboardTenant(ctx, req.GetTenantId(), req.GetAbandonPending())
	if err != nil {
		return nil, err
	}
	return &connectionv1.OffboardTenantResponse{
		Revoked: int32(res.Revoked), Pending: int32(res.Pending), Failed: int32(res.Failed),
	}, nil
}
