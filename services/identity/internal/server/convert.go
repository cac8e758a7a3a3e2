package server

import (
	"math"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	"github.com/bulkhead/bulkhead/pkg/authz"
	"github.com/bulkhead/bulkhead/services/identity/internal/app"
	"github.com/bulkhead/bulkhead/services/identity/internal/store"
)

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

var tenantStatuses = map[store.TenantStatus]identityv1.TenantStatus{
	store.TenantActive:    identityv1.TenantStatus_TENANT_STATUS_ACTIVE,
	store.TenantSuspended: identityv1.TenantStatus_TENANT_STATUS_SUSPENDED,
	store.TenantDeleting:  identityv1.TenantStatus_TENANT_STATUS_DELETING,
	store.TenantDeleted:   identityv1.TenantStatus_TENANT_STATUS_DELETED,
}

func toTenant(t *store.Tenant) *identityv1.Tenant {
	return &identityv1.Tenant{
		TenantId:      t.ID,
		Name:          t.Name,
		Status:        tenantStatuses[t.Status],
		SuspendReason: t.SuspendReason,
		CreateTime:    ts(t.CreatedAt),
		UpdateTime:    ts(t.UpdatedAt),
		Lifecycle: &identityv1.TenantLifecycle{
			PendingStep:     string(t.Lifecycle.Step),
			Attempts:        int32(min(t.Lifecycle.Attempts, math.MaxInt32)),
			LastError:       t.Lifecycle.LastError,
			NextAttemptTime: ts(t.Lifecycle.NextAt),
			DeleteTime:      ts(t.Lifecycle.DeleteRequestedAt),
			CompletedSteps:  t.Lifecycle.Done,
		},
	}
}

var roles = map[authz.Role]identityv1.Role{
	authz.RoleOwner:  identityv1.Role_ROLE_OWNER,
	authz.RoleAdmin:  identityv1.Role_ROLE_ADMIN,
	authz.RoleMember: identityv1.Role_ROLE_MEMBER,
	authz.RoleViewer: identityv1.Role_ROLE_VIEWER,
}

// fromRole maps an API role to authz's; ok is false for ROLE_UNSPECIFIED or an unknown value
// (the validator refuses those first).
func fromRole(r identityv1.Role) (authz.Role, bool) {
	for k, v := range roles {
		if v == r {
			return k, true
		}
	}
	return "", false
}

func toMember(m *store.Member) *identityv1.Member {
	return &identityv1.Member{
		TenantId:    m.TenantID,
		UserId:      m.UserID,
		Email:       m.Email,
		DisplayName: m.DisplayName,
		Role:        roles[m.Role],
		CreateTime:  ts(m.CreatedAt),
	}
}

func toServiceAccount(sa *store.ServiceAccount) *identityv1.ServiceAccount {
	return &identityv1.ServiceAccount{
		TenantId:         sa.TenantID,
		ServiceAccountId: sa.ID,
		Name:             sa.Name,
		Description:      sa.Description,
		Scopes:           sa.Scopes,
		CreateTime:       ts(sa.CreatedAt),
	}
}

func toAPIKey(k *store.APIKey) *identityv1.ApiKey {
	principal := "user:" + k.UserID
	if k.ServiceAccountID != "" {
		principal = "sa:" + k.ServiceAccountID
	}
	return &identityv1.ApiKey{
		TenantId:    k.TenantID,
		ApiKeyId:    k.ID,
		Principal:   principal,
		Prefix:      app.KeyPrefix(k.TenantID, k.LookupID),
		CreateTime:  ts(k.CreatedAt),
		ExpireTime:  ts(k.ExpiresAt),
		RevokeTime:  ts(k.RevokedAt),
		LastUseTime: ts(k.LastUsedAt),
	}
}
