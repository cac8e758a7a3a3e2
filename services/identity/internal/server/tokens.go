package server

import (
	"context"

	"google.golang.org/protobuf/types/known/timestamppb"

	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/services/identity/internal/app"
)

// tokenType is the only token type identity issues.
const tokenType = "Bearer"

type tokenServer struct {
	identityv1.UnsafeTokenServiceServer
	tokens *app.Tokens
	keys   SigningKeys
}

func (s *tokenServer) IssueToken(ctx context.Context, req *identityv1.IssueTokenRequest) (*identityv1.IssueTokenResponse, error) {
	var (
		out *app.Issued
		err error
	)
	switch cred := req.GetCredential().(type) {
	case *identityv1.IssueTokenRequest_ApiKey:
		out, err = s.tokens.IssueWithAPIKey(ctx, cred.ApiKey, req.GetAudience())
	case *identityv1.IssueTokenRequest_Platform:
		out, err = s.tokens.IssueWithPlatformCredential(ctx, cred.Platform.GetClientId(), cred.Platform.GetClientSecret(), req.GetAudience())
	default:
		return nil, apierr.InvalidArgument("credential", "a credential is required")
	}
	if err != nil {
		return nil, err
	}
	return &identityv1.IssueTokenResponse{AccessToken: out.Token, TokenType: tokenType, ExpireTime: timestamppb.New(out.ExpiresAt)}, nil
}

func (s *tokenServer) ExchangeToken(ctx context.Context, req *identityv1.ExchangeTokenRequest) (*identityv1.ExchangeTokenResponse, error) {
	c, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	out, err := s.tokens.Exchange(ctx, c, app.ExchangeInput{
		SubjectToken: req.GetSubjectToken(),
		TenantID:     req.GetTenantId(),
		UserID:       req.GetUserId(),
		Audience:     req.GetAudience(),
	})
	if err != nil {
		return nil, err
	}
	return &identityv1.ExchangeTokenResponse{AccessToken: out.Token, TokenType: tokenType, ExpireTime: timestamppb.New(out.ExpiresAt)}, nil
}

func (s *tokenServer) GetJwks(ctx context.Context, _ *identityv1.GetJwksRequest) (*identityv1.GetJwksResponse, error) {
	b, err := s.keys.JWKS(ctx)
	if err != nil {
		return nil, err
	}
	return &identityv1.GetJwksResponse{JwksJson: string(b)}, nil
}

func (s *tokenServer) RotateSigningKey(ctx context.Context, _ *identityv1.RotateSigningKeyRequest) (*identityv1.RotateSigningKeyResponse, error) {
	kid, err := s.keys.Rotate(ctx)
	if err != nil {
		return nil, err
	}
	return &identityv1.RotateSigningKeyResponse{Kid: kid}, nil
}
