package server

import (
	"context"

	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/services/identity/internal/app"
)

type memberServer struct {
	identityv1.UnsafeMemberServiceServer
	members *app.Members
}

func (s *memberServer) AddMember(ctx context.Context, req *identityv1.AddMemberRequest) (*identityv1.AddMemberResponse, error) {
	c, tenant, err := ownTenant(ctx, req.GetTenantId(), "tenant")
	if err != nil {
		return nil, err
	}
	role, ok := fromRole(req.GetRole())
	if !ok {
		return nil, apierr.InvalidArgument("role", "unknown role")
	}
	m, err := s.members.Add(ctx, c, tenant, req.GetEmail(), req.GetDisplayName(), role)
	if err != nil {
		return nil, err
	}
	return &identityv1.AddMemberResponse{Member: toMember(m)}, nil
}

func (s *memberServer) GetMember(ctx context.Context, req *identityv1.GetMemberRequest) (*identityv1.GetMemberResponse, error) {
	_, tenant, err := ownTenant(ctx, req.GetTenantId(), "member")
	if err != nil {
		return nil, err
	}
	m, err := s.members.Get(ctx, tenant, req.GetUserId())
	if err != nil {
		return nil, err
	}
	return &identityv1.GetMemberResponse{Member: toMember(m)}, nil
}

func (s *memberServer) ListMembers(ctx context.Context, req *identityv1.ListMembersRequest) (*identityv1.ListMembersResponse, error) {
	_, tenant, err := ownTenant(ctx, req.GetTenantId(), "tenant")
	if err != nil {
		return nil, err
	}
	ms, next, err := s.members.List(ctx, tenant, app.PageRequest{Size: req.GetPageSize(), Token: req.GetPageToken()})
	if err != nil {
		return nil, err
	}
	out := &identityv1.ListMembersResponse{NextPageToken: next, Members: make([]*identityv1.Member, len(ms))}
	for i := range ms {
		out.Members[i] = toMember(&ms[i])
	}
	return out, nil
}

func (s *memberServer) UpdateMemberRole(ctx context.Context, req *identityv1.UpdateMemberRoleRequest) (*identityv1.UpdateMemberRoleResponse, error) {
	c, tenant, err := ownTenant(ctx, req.GetTenantId(), "member")
	if err != nil {
		return nil, err
	}
	role, ok := fromRole(req.GetRole())
	if !ok {
		return nil, apierr.InvalidArgument("role", "unknown role")
	}
	m, err := s.members.UpdateRole(ctx, c, tenant, req.GetUserId(), role)
	if err != nil {
		return nil, err
	}
	return &identityv1.UpdateMemberRoleResponse{Member: toMember(m)}, nil
}

func (s *memberServer) RemoveMember(ctx context.Context, req *identityv1.RemoveMemberRequest) (*identityv1.RemoveMemberResponse, error) {
	c, tenant, err := ownTenant(ctx, req.GetTenantId(), "member")
	if err != nil {
		return nil, err
	}
	if err := s.members.Remove(ctx, c, tenant, req.GetUserId()); err != nil {
		return nil, err
	}
	return &identityv1.RemoveMemberResponse{}, nil
}
