package server

import (
	"context"

	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	"github.com/bulkhead/bulkhead/pkg/authz"
	"github.com/bulkhead/bulkhead/services/identity/internal/app"
)

type tenantServer struct {
	identityv1.UnsafeTenantServiceServer
	tenants *app.Tenants
}

func (s *tenantServer) CreateTenant(ctx context.Context, req *identityv1.CreateTenantRequest) (*identityv1.CreateTenantResponse, error) {
	res, err := s.tenants.Create(ctx, app.CreateTenantInput{
		Name:             req.GetName(),
		OwnerEmail:       req.GetOwnerEmail(),
		OwnerDisplayName: req.GetOwnerDisplayName(),
		IdempotencyKey:   req.GetIdempotencyKey(),
	})
	if err != nil {
		return nil, err
	}
	return &identityv1.CreateTenantResponse{
		Tenant:       toTenant(&res.Tenant),
		Owner:        toMember(&res.Owner),
		ApiKey:       toAPIKey(&res.Key),
		ApiKeySecret: res.Secret,
		Replayed:     res.Replayed,
	}, nil
}

func (s *tenantServer) GetTenant(ctx context.Context, req *identityv1.GetTenantRequest) (*identityv1.GetTenantResponse, error) {
	_, tenant, err := tenantOrPlatform(ctx, req.GetTenantId(), authz.TenantRead, authz.PlatformTenantsRead)
	if err != nil {
		return nil, err
	}
	t, err := s.tenants.Get(ctx, tenant)
	if err != nil {
		return nil, err
	}
	return &identityv1.GetTenantResponse{Tenant: toTenant(t)}, nil
}

func (s *tenantServer) ListTenants(ctx context.Context, req *identityv1.ListTenantsRequest) (*identityv1.ListTenantsResponse, error) {
	ts, next, err := s.tenants.List(ctx, app.PageRequest{Size: req.GetPageSize(), Token: req.GetPageToken()})
	if err != nil {
		return nil, err
	}
	out := &identityv1.ListTenantsResponse{NextPageToken: next, Tenants: make([]*identityv1.Tenant, len(ts))}
	for i := range ts {
		out.Tenants[i] = toTenant(&ts[i])
	}
	return out, nil
}

func (s *tenantServer) SuspendTenant(ctx context.Context, req *identityv1.SuspendTenantRequest) (*identityv1.SuspendTenantResponse, error) {
	_, tenant, err := tenantOrPlatform(ctx, req.GetTenantId(), authz.TenantManage, authz.PlatformTenantsManage)
	if err != nil {
		return nil, err
	}
	t, err := s.tenants.Suspend(ctx, tenant, req.GetReason())
	if err != nil {
		return nil, err
	}
	return &identityv1.SuspendTenantResponse{Tenant: toTenant(t)}, nil
}

func (s *tenantServer) ResumeTenant(ctx context.Context, req *identityv1.ResumeTenantRequest) (*identityv1.ResumeTenantResponse, error) {
	// Operators only (Policy): a suspended tenant's own tokens are refused before this runs.
	_, tenant, err := tenantOrPlatform(ctx, req.GetTenantId(), authz.PlatformTenantsManage, authz.PlatformTenantsManage)
	if err != nil {
		return nil, err
	}
	t, err := s.tenants.Resume(ctx, tenant)
	if err != nil {
		return nil, err
	}
	return &identityv1.ResumeTenantResponse{Tenant: toTenant(t)}, nil
}

func (s *tenantServer) DeleteTenant(ctx context.Context, req *identityv1.DeleteTenantRequest) (*identityv1.DeleteTenantResponse, error) {
	_, tenant, err := tenantOrPlatform(ctx, req.GetTenantId(), authz.TenantDelete, authz.PlatformTenantsManage)
	if err != nil {
		return nil, err
	}
	t, err := s.tenants.Delete(ctx, tenant)
	if err != nil {
		return nil, err
	}
	return &identityv1.DeleteTenantResponse{Tenant: toTenant(t)}, nil
}

func (s *tenantServer) GetTenantStatus(ctx context.Context, req *identityv1.GetTenantStatusRequest) (*identityv1.GetTenantStatusResponse, error) {
	// Bulkhead services only (Policy, tenants.status): they ask about the tenant of a token they
	// are verifying, so the tenant comes from the request by design.
	st, err := s.tenants.Status(ctx, req.GetTenantId())
	if err != nil {
		return nil, err
	}
	return &identityv1.GetTenantStatusResponse{Status: tenantStatuses[st]}, nil
}
