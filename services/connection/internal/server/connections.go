package server

import (
	"context"

	connectionv1 "github.com/bulkhead/bulkhead/gen/bulkhead/connection/v1"
	"github.com/bulkhead/bulkhead/services/connection/internal/app"
	"github.com/bulkhead/bulkhead/services/connection/internal/store"
)

type connectionServer struct {
	connectionv1.UnsafeConnectionServiceServer
	app *app.App
}

func (s *connectionServer) CreateCredentialConnection(ctx context.Context, req *connectionv1.CreateCredentialConnectionRequest) (*connectionv1.CreateCredentialConnectionResponse, error) {
	if err := ownTenant(ctx, req.GetTenantId(), "integration"); err != nil {
		return nil, err
	}
	c, err := s.app.CreateCredentialConnection(ctx, app.CredentialRequest{
		Integration: req.GetIntegration(), Scope: fromScope(req.GetScope()), Fields: req.GetFields(),
		Secret: req.GetSecret(), Username: req.GetUsername(), Tags: req.GetTags(), IdempotencyKey: req.GetIdempotencyKey(),
	})
	if err != nil {
		return nil, err
	}
	return &connectionv1.CreateCredentialConnectionResponse{Connection: toConnection(c)}, nil
}

func (s *connectionServer) StartAuthorization(ctx context.Context, req *connectionv1.StartAuthorizationRequest) (*connectionv1.StartAuthorizationResponse, error) {
	if err := ownTenant(ctx, req.GetTenantId(), "integration"); err != nil {
		return nil, err
	}
	a, err := s.app.StartAuthorization(ctx, app.AuthorizationRequest{
		Integration: req.GetIntegration(), Scope: fromScope(req.GetScope()), Fields: req.GetFields(),
		Scopes: req.GetScopes(), ConnectionID: req.GetConnectionId(), ReturnURL: req.GetReturnUrl(), Tags: req.GetTags(),
	})
	if err != nil {
		return nil, err
	}
	return &connectionv1.StartAuthorizationResponse{AuthorizationUrl: a.URL, State: a.State, ExpireTime: ts(a.ExpiresAt)}, nil
}

func (s *connectionServer) GetConnection(ctx context.Context, req *connectionv1.GetConnectionRequest) (*connectionv1.GetConnectionResponse, error) {
	if err := ownTenant(ctx, req.GetTenantId(), "connection"); err != nil {
		return nil, err
	}
	c, err := s.app.GetConnection(ctx, req.GetConnectionId())
	if err != nil {
		return nil, err
	}
	return &connectionv1.GetConnectionResponse{Connection: toConnection(c)}, nil
}

func (s *connectionServer) ListConnections(ctx context.Context, req *connectionv1.ListConnectionsRequest) (*connectionv1.ListConnectionsResponse, error) {
	if err := ownTenant(ctx, req.GetTenantId(), "tenant"); err != nil {
		return nil, err
	}
	f := store.Filter{Integration: req.GetIntegration(), Scope: fromScope(req.GetScope()), Status: fromStatus(req.GetStatus())}
	conns, next, err := s.app.ListConnections(ctx, f, int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	out := &connectionv1.ListConnectionsResponse{NextPageToken: next, Connections: make([]*connectionv1.Connection, len(conns))}
	for i, c := range conns {
		out.Connections[i] = toConnection(c)
	}
	return out, nil
}

func (s *connectionServer) SetConnectionEnabled(ctx context.Context, req *connectionv1.SetConnectionEnabledRequest) (*connectionv1.SetConnectionEnabledResponse, error) {
	if err := ownTenant(ctx, req.GetTenantId(), "connection"); err != nil {
		return nil, err
	}
	c, err := s.app.SetConnectionEnabled(ctx, req.GetConnectionId(), req.GetEnabled())
	if err != nil {
		return nil, err
	}
	return &connectionv1.SetConnectionEnabledResponse{Connection: toConnection(c)}, nil
}

func (s *connectionServer) RevokeConnection(ctx context.Context, req *connectionv1.RevokeConnectionRequest) (*connectionv1.RevokeConnectionResponse, error) {
	if err := ownTenant(ctx, req.GetTenantId(), "connection"); err != nil {
		return nil, err
	}
	c, err := s.app.RevokeConnection(ctx, req.GetConnectionId())
	if err != nil {
		return nil, err
	}
	return &connectionv1.RevokeConnectionResponse{Connection: toConnection(c)}, nil
}

func (s *connectionServer) DeleteConnection(ctx context.Context, req *connectionv1.DeleteConnectionRequest) (*connectionv1.DeleteConnectionResponse, error) {
	// allow_missing covers only a connection missing in the caller's own tenant: another
	// tenant's id is refused as before.
	if err := ownTenant(ctx, req.GetTenantId(), "connection"); err != nil {
		return nil, err
	}
	if err := s.app.DeleteConnection(ctx, req.GetConnectionId(), req.GetAllowMissing()); err != nil {
		return nil, err
	}
	return &connectionv1.DeleteConnectionResponse{}, nil
}

func (s *connectionServer) GetAccessToken(ctx context.Context, req *connectionv1.GetAccessTokenRequest) (*connectionv1.GetAccessTokenResponse, error) {
	if err := ownTenant(ctx, req.GetTenantId(), "connection"); err != nil {
		return nil, err
	}
	t, err := s.app.GetAccessToken(ctx, app.TokenRequest{
		ConnectionID: req.GetConnectionId(), ForceRefresh: req.GetForceRefresh(), RejectedVersion: req.GetRejectedCredentialVersion(),
	})
	if err != nil {
		return nil, err
	}
	return &connectionv1.GetAccessTokenResponse{
		AccessToken: t.Token, TokenType: t.TokenType, ExpireTime: ts(t.ExpiresAt), AuthType: toAuthType(t.AuthType),
		Username: t.Username, Fields: t.Fields, CredentialVersion: t.CredentialVersion,
	}, nil
}

func (s *connectionServer) Proxy(ctx context.Context, req *connectionv1.ProxyRequest) (*connectionv1.ProxyResponse, error) {
	if err := ownTenant(ctx, req.GetTenantId(), "connection"); err != nil {
		return nil, err
	}
	r, err := s.app.Proxy(ctx, app.ProxyRequest{
		ConnectionID: req.GetConnectionId(), Method: req.GetMethod(), Path: req.GetPath(),
		Query: fromParams(req.GetQuery()), Headers: fromParams(req.GetHeaders()), Body: req.GetBody(),
		BaseURLIndex: int(req.GetBaseUrlIndex()),
	})
	if err != nil {
		return nil, err
	}
	out := &connectionv1.ProxyResponse{Status: int32(r.Status), Body: r.Body, Truncated: r.Truncated}
	for _, h := range r.Headers {
		out.Headers = append(out.Headers, &connectionv1.ProxyParam{Name: h.Name, Value: h.Value})
	}
	return out, nil
}

func fromParams(in []*connectionv1.ProxyParam) []app.Param {
	out := make([]app.Param, len(in))
	for i, p := range in {
		out[i] = app.Param{Name: p.GetName(), Value: p.GetValue()}
	}
	return out
}
