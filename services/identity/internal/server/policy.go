package server

import (
	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	"github.com/bulkhead/bulkhead/pkg/authz"
	"github.com/bulkhead/bulkhead/pkg/claims"
	"github.com/bulkhead/bulkhead/pkg/grpcserver"
)

// tenantOrOperator are the principals of the tenant RPCs that platform operators may also call.
// Their rules carry no Permission because the permission depends on who calls (a tenant
// permission for the tenant's own principals, a platform one for operators): the handler
// checks it through tenantOrPlatform, and NoTenant only lets operators (who have no tenant)
// through — tenant principals without a tenant are refused by authz regardless.
var tenantOrOperator = []claims.Kind{claims.KindUser, claims.KindServiceAccount, claims.KindOperator}

// Policy is the authorization rule of every identity method, with the permission each RPC's
// proto comment states. grpcserver refuses to start if a registered method is missing here, and
// authz denies any method it does not name.
func Policy() authz.Policy {
	p := authz.Policy{
		// TenantService.
		identityv1.TenantService_CreateTenant_FullMethodName:    {Public: true},
		identityv1.TenantService_GetTenant_FullMethodName:       {Kinds: tenantOrOperator, NoTenant: true},
		identityv1.TenantService_ListTenants_FullMethodName:     {Permission: authz.PlatformTenantsRead, Kinds: []claims.Kind{claims.KindOperator}, NoTenant: true},
		identityv1.TenantService_SuspendTenant_FullMethodName:   {Kinds: tenantOrOperator, NoTenant: true},
		identityv1.TenantService_ResumeTenant_FullMethodName:    {Permission: authz.PlatformTenantsManage, Kinds: []claims.Kind{claims.KindOperator}, NoTenant: true},
		identityv1.TenantService_DeleteTenant_FullMethodName:    {Kinds: tenantOrOperator, NoTenant: true},
		identityv1.TenantService_GetTenantStatus_FullMethodName: {Permission: authz.TenantsStatus, Kinds: []claims.Kind{claims.KindService}, NoTenant: true},

		// MemberService.
		identityv1.MemberService_AddMember_FullMethodName:        {Permission: authz.MembersManage},
		identityv1.MemberService_GetMember_FullMethodName:        {Permission: authz.MembersRead},
		identityv1.MemberService_ListMembers_FullMethodName:      {Permission: authz.MembersRead},
		identityv1.MemberService_UpdateMemberRole_FullMethodName: {Permission: authz.MembersManage},
		identityv1.MemberService_RemoveMember_FullMethodName:     {Permission: authz.MembersManage},

		// ServiceAccountService.
		identityv1.ServiceAccountService_CreateServiceAccount_FullMethodName: {Permission: authz.ServiceAccountsManage},
		identityv1.ServiceAccountService_GetServiceAccount_FullMethodName:    {Permission: authz.ServiceAccountsRead},
		identityv1.ServiceAccountService_ListServiceAccounts_FullMethodName:  {Permission: authz.ServiceAccountsRead},
		identityv1.ServiceAccountService_DeleteServiceAccount_FullMethodName: {Permission: authz.ServiceAccountsManage},
		// Any member may create a key for itself; a service account's key needs
		// service_accounts.manage — checked by the use case, which knows whose key it is.
		identityv1.ServiceAccountService_CreateApiKey_FullMethodName: {},
		identityv1.ServiceAccountService_ListApiKeys_FullMethodName:  {Permission: authz.ServiceAccountsRead},
		// service_accounts.manage, or the key's own user: checked by the use case.
		identityv1.ServiceAccountService_RevokeApiKey_FullMethodName: {},

		// TokenService.
		identityv1.TokenService_IssueToken_FullMethodName:       {Public: true},
		identityv1.TokenService_ExchangeToken_FullMethodName:    {Permission: authz.TokensExchange, Kinds: []claims.Kind{claims.KindService}, NoTenant: true},
		identityv1.TokenService_GetJwks_FullMethodName:          {Public: true},
		identityv1.TokenService_RotateSigningKey_FullMethodName: {Permission: authz.PlatformTenantsManage, Kinds: []claims.Kind{claims.KindOperator}, NoTenant: true},

		// EventService: the outbox of every tenant, for Bulkhead services acting as themselves.
		identityv1.EventService_ListEvents_FullMethodName: {Permission: authz.EventsRead, Kinds: []claims.Kind{claims.KindService}, NoTenant: true},
	}
	// Reflection describes the API, which is public anyway (the protos are published); it lets
	// grpcurl and mesh tooling work without a token.
	for _, m := range grpcserver.ReflectionMethods {
		p[m] = authz.Rule{Public: true}
	}
	return p
}
