package server

import (
	"context"
	"log/slog"

	"github.com/google/uuid"

	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	syncv1 "github.com/bulkhead/bulkhead/gen/bulkhead/sync/v1"
	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/pkg/authz"
	"github.com/bulkhead/bulkhead/pkg/claims"
	"github.com/bulkhead/bulkhead/services/sync/internal/purge"
)

// ReasonTenantNotDeleting is the ErrorInfo reason of PurgeTenant for a tenant identity does not
// report DELETING or DELETED.
const ReasonTenantNotDeleting = "TENANT_NOT_DELETING"

// OffboardingPolicy is who may call TenantDataService: identity's deletion saga, acting as
// itself (a svc: principal with tenants.offboard and no tenant). Other services also hold
// tenants.offboard (the connection service, to finish revoking a DELETING tenant's
// connections) but have no business erasing sync's data, so the hop must be identity's.
func OffboardingPolicy() authz.Policy {
	return authz.Policy{
		syncv1.TenantDataService_PurgeTenant_FullMethodName: {
			Permission: authz.TenantsOffboard, Kinds: []claims.Kind{claims.KindService},
			Services: []string{"identity"}, NoTenant: true,
		},
	}
}

// TenantStatuses is identity's view of a tenant (internal/identity.Client): asked directly,
// not through the verifier's cache, so a purge never runs on a stale answer.
type TenantStatuses interface {
	TenantStatus(ctx context.Context, tenantID string) (identityv1.TenantStatus, error)
}

// TenantData implements TenantDataService.
type TenantData struct {
	syncv1.UnsafeTenantDataServiceServer
	purger  *purge.Purger
	tenants TenantStatuses
	log     *slog.Logger
}

// NewTenantData returns the TenantDataService handlers.
func NewTenantData(p *purge.Purger, tenants TenantStatuses, logger *slog.Logger) *TenantData {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &TenantData{purger: p, tenants: tenants, log: logger}
}

var _ syncv1.TenantDataServiceServer = (*TenantData)(nil)

// PurgeTenant deletes one batch of a DELETING (or DELETED) tenant's data. The tenant's state
// comes from identity, never from the caller: a mistaken or forged call for a live tenant
// deletes nothing.
func (s *TenantData) PurgeTenant(ctx context.Context, req *syncv1.PurgeTenantRequest) (*syncv1.PurgeTenantResponse, error) {
	id, err := uuid.Parse(req.GetTenantId())
	if err != nil {
		return nil, apierr.InvalidArgument("tenant_id", "not a UUID")
	}
	// Canonical form: job arguments hold the tenant as tokens carry it (lower case), and the
	// jobs are matched on it as JSON text.
	tenantID := id.String()
	st, err := s.tenants.TenantStatus(ctx, tenantID)
	if err != nil {
		// identityclient already maps an unreachable identity to UNAVAILABLE with retry info.
		return nil, err
	}
	switch st {
	case identityv1.TenantStatus_TENANT_STATUS_DELETING, identityv1.TenantStatus_TENANT_STATUS_DELETED:
	default:
		return nil, apierr.FailedPrecondition(ReasonTenantNotDeleting, "the tenant is not being deleted")
	}
	res, err := s.purger.Purge(ctx, tenantID)
	if err != nil {
		return nil, err
	}
	return &syncv1.PurgeTenantResponse{Deleted: res.Deleted, Done: res.Done}, nil
}
