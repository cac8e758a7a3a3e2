package app

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/pkg/authz"
	"github.com/bulkhead/bulkhead/pkg/claims"
	"github.com/bulkhead/bulkhead/services/identity/internal/store"
)

// MaxKeyLifetime bounds an API key's requested expiry (CreateApiKeyRequest.expire_time).
const MaxKeyLifetime = 366 * 24 * time.Hour

// ServiceAccountStore is what the service-account use cases need.
type ServiceAccountStore interface {
	store.ServiceAccounts
	store.APIKeys
}

// ServiceAccounts are the service account and API key use cases.
type ServiceAccounts struct {
	store ServiceAccountStore
	clock Clock
}

// NewServiceAccounts returns the service account and API key use cases.
func NewServiceAccounts(s ServiceAccountStore, clock Clock) *ServiceAccounts {
	return &ServiceAccounts{store: s, clock: clock}
}

// checkScopes refuses scopes that are not tenant permissions (InvalidArgument) and scopes the
// caller does not hold itself (PermissionDenied): holding service_accounts.manage must not be a
// way to mint a principal stronger than oneself — e.g. an admin creating an account with
// tenant.delete, which only owners have.
func checkScopes(caller *claims.Claims, scopes []string) error {
	for _, s := range scopes {
		p := authz.Permission(s)
		if !authz.IsTenantPermission(p) {
			return apierr.InvalidArgument("scopes", "unknown scope %q: scopes must be tenant permissions", s)
		}
	}
	for _, s := range scopes {
		if !authz.Has(caller, authz.Permission(s)) {
			return apierr.PermissionDenied("cannot grant scope %s that the caller does not hold", s)
		}
	}
	return nil
}

// Create creates a service account with exactly scopes.
func (s *ServiceAccounts) Create(ctx context.Context, caller *claims.Claims, tenantID, name, description string, scopes []string) (*store.ServiceAccount, error) {
	if err := checkScopes(caller, scopes); err != nil {
		return nil, err
	}
	sa, err := s.store.CreateServiceAccount(ctx, tenantID, store.ServiceAccount{
		ID: uuid.NewString(), Name: name, Description: description, Scopes: scopes,
	})
	if err != nil {
		return nil, storeError(err, "service account")
	}
	return sa, nil
}

// Get returns a live service account.
func (s *ServiceAccounts) Get(ctx context.Context, tenantID, id string) (*store.ServiceAccount, error) {
	sa, err := s.store.GetServiceAccount(ctx, tenantID, id)
	return sa, storeError(err, "service account")
}

// List lists live service accounts, oldest first.
func (s *ServiceAccounts) List(ctx context.Context, tenantID string, p PageRequest) ([]store.ServiceAccount, string, error) {
	page, err := p.page()
	if err != nil {
		return nil, "", err
	}
	out, next, err := s.store.ListServiceAccounts(ctx, tenantID, page)
	if err != nil {
		return nil, "", storeError(err, "service account")
	}
	return out, encodePageToken(next), nil
}

// Delete deletes a service account and revokes its keys.
func (s *ServiceAccounts) Delete(ctx context.Context, tenantID, id string) error {
	return storeError(s.store.DeleteServiceAccount(ctx, tenantID, id), "service account")
}

// CreateKeyInput asks for a key for a service account or for the calling user.
type CreateKeyInput struct {
	ServiceAccountID string
	UserID           string
	// ExpiresAt is zero for a key that does not expire.
	ExpiresAt time.Time
}

// CreateKey mints an API key and returns it with its secret, which is shown only here.
// A service account's key needs service_accounts.manage; a user creates keys only for itself.
func (s *ServiceAccounts) CreateKey(ctx context.Context, caller *claims.Claims, tenantID string, in CreateKeyInput) (*store.APIKey, string, error) {
	switch {
	case in.ServiceAccountID != "" && in.UserID != "":
		return nil, "", apierr.InvalidArgument("owner", "exactly one of service_account_id and user_id")
	case in.ServiceAccountID != "":
		if !authz.Has(caller, authz.ServiceAccountsManage) {
			return nil, "", apierr.PermissionDenied("missing permission %s", authz.ServiceAccountsManage)
		}
	case in.UserID != "":
		if caller.Kind != claims.KindUser || caller.Subject != in.UserID {
			return nil, "", apierr.PermissionDenied("users create API keys only for themselves")
		}
	default:
		return nil, "", apierr.InvalidArgument("owner", "one of service_account_id and user_id is required")
	}
	if !in.ExpiresAt.IsZero() {
		now := s.clock.now()
		if !in.ExpiresAt.After(now) || in.ExpiresAt.Sub(now) > MaxKeyLifetime {
			return nil, "", apierr.InvalidArgument("expire_time", "expire_time must be in the future and at most a year ahead")
		}
	}
	key, err := newAPIKeyMaterial(tenantID, in.UserID, in.ServiceAccountID, in.ExpiresAt)
	if err != nil {
		return nil, "", err
	}
	k, err := s.store.CreateAPIKey(ctx, tenantID, key.stored)
	if err != nil {
		owner := "service account"
		if in.UserID != "" {
			owner = "member"
		}
		return nil, "", storeError(err, owner)
	}
	return k, key.secret, nil
}

// ListKeys lists key metadata, oldest first.
func (s *ServiceAccounts) ListKeys(ctx context.Context, tenantID string, p PageRequest) ([]store.APIKey, string, error) {
	page, err := p.page()
	if err != nil {
		return nil, "", err
	}
	out, next, err := s.store.ListAPIKeys(ctx, tenantID, page)
	if err != nil {
		return nil, "", storeError(err, "api key")
	}
	return out, encodePageToken(next), nil
}

// RevokeKey revokes a key (idempotent). Allowed with service_accounts.manage, or to the key's
// own user.
func (s *ServiceAccounts) RevokeKey(ctx context.Context, caller *claims.Claims, tenantID, keyID string) (*store.APIKey, error) {
	k, err := s.store.RevokeAPIKey(ctx, tenantID, keyID, func(k store.APIKey) error {
		own := caller.Kind == claims.KindUser && k.UserID != "" && k.UserID == caller.Subject
		if own || authz.Has(caller, authz.ServiceAccountsManage) {
			return nil
		}
		return apierr.PermissionDenied("only the key's user or a holder of %s may revoke it", authz.ServiceAccountsManage)
	})
	if err != nil {
		return nil, storeError(err, "api key")
	}
	return k, nil
}
