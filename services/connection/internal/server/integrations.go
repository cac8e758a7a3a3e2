package server

import (
	"context"

	connectionv1 "github.com/bulkhead/bulkhead/gen/bulkhead/connection/v1"
	"github.com/bulkhead/bulkhead/services/connection/internal/app"
)

type integrationServer struct {
	connectionv1.UnsafeIntegrationServiceServer
	app *app.App
}

func (s *integrationServer) ListIntegrations(ctx context.Context, req *connectionv1.ListIntegrationsRequest) (*connectionv1.ListIntegrationsResponse, error) {
	if err := ownTenant(ctx, req.GetTenantId(), "tenant"); err != nil {
		return nil, err
	}
	list, err := s.app.ListIntegrations(ctx)
	if err != nil {
		return nil, err
	}
	out := &connectionv1.ListIntegrationsResponse{Integrations: make([]*connectionv1.Integration, len(list))}
	for i, in := range list {
		out.Integrations[i] = toIntegration(in)
	}
	return out, nil
}

func (s *integrationServer) GetIntegration(ctx context.Context, req *connectionv1.GetIntegrationRequest) (*connectionv1.GetIntegrationResponse, error) {
	if err := ownTenant(ctx, req.GetTenantId(), "integration"); err != nil {
		return nil, err
	}
	in, err := s.app.GetIntegration(ctx, req.GetIntegration())
	if err != nil {
		return nil, err
	}
	return &connectionv1.GetIntegrationResponse{Integration: toIntegration(in)}, nil
}

func (s *integrationServer) UpdateIntegrationSettings(ctx context.Context, req *connectionv1.UpdateIntegrationSettingsRequest) (*connectionv1.UpdateIntegrationSettingsResponse, error) {
	if err := ownTenant(ctx, req.GetTenantId(), "integration"); err != nil {
		return nil, err
	}
	u := app.SettingsUpdate{ClearOAuthApp: req.GetClearOauthApp(), Scope: fromScope(req.GetConnectionScope())}
	if req.Enabled != nil {
		enabled := req.GetEnabled()
		u.Enabled = &enabled
	}
	if oa := req.GetOauthApp(); oa != nil {
		u.OAuthApp = &app.OAuthClient{ClientID: oa.GetClientId(), ClientSecret: oa.GetClientSecret()}
	}
	if as := req.GetAllowedScopes(); as != nil {
		scopes := append([]string{}, as.GetScopes()...)
		u.AllowedScopes = &scopes
	}
	in, err := s.app.UpdateIntegrationSettings(ctx, req.GetIntegration(), u)
	if err != nil {
		return nil, err
	}
	return &connectionv1.UpdateIntegrationSettingsResponse{Integration: toIntegration(in)}, nil
}
