package server

import (
	"context"
	"time"

	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	"github.com/bulkhead/bulkhead/services/identity/internal/app"
)

type serviceAccountServer struct {
	identityv1.UnsafeServiceAccountServiceServer
	accounts *app.ServiceAccounts
}

func (s *serviceAccountServer) CreateServiceAccount(ctx context.Context, req *identityv1.CreateServiceAccountRequest) (*identityv1.CreateServiceAccountResponse, error) {
	c, tenant, err := ownTenant(ctx, req.GetTenantId(), "tenant")
	if err != nil {
		return nil, err
	}
	sa, err := s.accounts.Create(ctx, c, tenant, req.GetName(), req.GetDescription(), req.GetScopes())
	if err != nil {
		return nil, err
	}
	return &identityv1.CreateServiceAccountResponse{ServiceAccount: toServiceAccount(sa)}, nil
}

func (s *serviceAccountServer) GetServiceAccount(ctx context.Context, req *identityv1.GetServiceAccountRequest) (*identityv1.GetServiceAccountResponse, error) {
	_, tenant, err := ownTenant(ctx, req.GetTenantId(), "service account")
	if err != nil {
		return nil, err
	}
	sa, err := s.accounts.Get(ctx, tenant, req.GetServiceAccountId())
	if err != nil {
		return nil, err
	}
	return &identityv1.GetServiceAccountResponse{ServiceAccount: toServiceAccount(sa)}, nil
}

func (s *serviceAccountServer) ListServiceAccounts(ctx context.Context, req *identityv1.ListServiceAccountsRequest) (*identityv1.ListServiceAccountsResponse, error) {
	_, tenant, err := ownTenant(ctx, req.GetTenantId(), "tenant")
	if err != nil {
		return nil, err
	}
	sas, next, err := s.accounts.List(ctx, tenant, app.PageRequest{Size: req.GetPageSize(), Token: req.GetPageToken()})
	if err != nil {
		return nil, err
	}
	out := &identityv1.ListServiceAccountsResponse{NextPageToken: next, ServiceAccounts: make([]*identityv1.ServiceAccount, len(sas))}
	for i := range sas {
		out.ServiceAccounts[i] = toServiceAccount(&sas[i])
	}
	return out, nil
}

func (s *serviceAccountServer) DeleteServiceAccount(ctx context.Context, req *identityv1.DeleteServiceAccountRequest) (*identityv1.DeleteServiceAccountResponse, error) {
	_, tenant, err := ownTenant(ctx, req.GetTenantId(), "service account")
	if err != nil {
		return nil, err
	}
	if err := s.accounts.Delete(ctx, tenant, req.GetServiceAccountId()); err != nil {
		return nil, err
	}
	return &identityv1.DeleteServiceAccountResponse{}, nil
}

func (s *serviceAccountServer) CreateApiKey(ctx context.Context, req *identityv1.CreateApiKeyRequest) (*identityv1.CreateApiKeyResponse, error) {
	c, tenant, err := ownTenant(ctx, req.GetTenantId(), "tenant")
	if err != nil {
		return nil, err
	}
	in := app.CreateKeyInput{ServiceAccountID: req.GetServiceAccountId(), UserID: req.GetUserId()}
	if req.GetExpireTime() != nil {
		in.ExpiresAt = req.GetExpireTime().AsTime()
		if in.ExpiresAt.IsZero() {
			// The Unix epoch round-trips as the zero time; it is in the past either way.
			in.ExpiresAt = time.Unix(0, 0)
		}
	}
	k, secret, err := s.accounts.CreateKey(ctx, c, tenant, in)
	if err != nil {
		return nil, err
	}
	return &identityv1.CreateApiKeyResponse{ApiKey: toAPIKey(k), Secret: secret}, nil
}

func (s *serviceAccountServer) ListApiKeys(ctx context.Context, req *identityv1.ListApiKeysRequest) (*identityv1.ListApiKeysResponse, error) {
	_, tenant, err := ownTenant(ctx, req.GetTenantId(), "tenant")
	if err != nil {
		return nil, err
	}
	ks, next, err := s.accounts.ListKeys(ctx, tenant, app.PageRequest{Size: req.GetPageSize(), Token: req.GetPageToken()})
	if err != nil {
		return nil, err
	}
	out := &identityv1.ListApiKeysResponse{NextPageToken: next, ApiKeys: make([]*identityv1.ApiKey, len(ks))}
	for i := range ks {
		out.ApiKeys[i] = toAPIKey(&ks[i])
	}
	return out, nil
}

func (s *serviceAccountServer) RevokeApiKey(ctx context.Context, req *identityv1.RevokeApiKeyRequest) (*identityv1.RevokeApiKeyResponse, error) {
	c, tenant, err := ownTenant(ctx, req.GetTenantId(), "api key")
	if err != nil {
		return nil, err
	}
	k, err := s.accounts.RevokeKey(ctx, c, tenant, req.GetApiKeyId())
	if err != nil {
		return nil, err
	}
	return &identityv1.RevokeApiKeyResponse{ApiKey: toAPIKey(k)}, nil
}
