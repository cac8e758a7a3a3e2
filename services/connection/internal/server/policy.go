package server

import (
	connectionv1 "github.com/bulkhead/bulkhead/gen/bulkhead/connection/v1"
	"github.com/bulkhead/bulkhead/pkg/authz"
	"github.com/bulkhead/bulkhead/pkg/claims"
	"github.com/bulkhead/bulkhead/pkg/grpcserver"
)

// tokenUsers may call GetAccessToken: tenant principals, and Bulkhead services acting for a
// tenant with a token of their own that carries connections.use. Which connections each may
// use, and that a user's token arrives only through a service hop, is the use case's check.
var tokenUsers = []claims.Kind{claims.KindUser, claims.KindServiceAccount, claims.KindService}

// Policy is the authorization rule of every connection-service method, with the permission
// each RPC's proto comment states. The finer rules (org-level connections are managed by
// connection admins, a user-level one is used only by its owner) need the connection and are
// the use cases' to check. grpcserver refuses to start if a registered method is missing here.
func Policy() authz.Policy {
	p := authz.Policy{
		connectionv1.ConnectionService_CreateCredentialConnection_FullMethodName: {Permission: authz.ConnectionsManage},
		connectionv1.ConnectionService_StartAuthorization_FullMethodName:         {Permission: authz.ConnectionsManage},
		connectionv1.ConnectionService_GetConnection_FullMethodName:              {Permission: authz.ConnectionsRead},
		connectionv1.ConnectionService_ListConnections_FullMethodName:            {Permission: authz.ConnectionsRead},
		connectionv1.ConnectionService_SetConnectionEnabled_FullMethodName:       {Permission: authz.ConnectionsManage},
		connectionv1.ConnectionService_RevokeConnection_FullMethodName:           {Permission: authz.ConnectionsManage},
		connectionv1.ConnectionService_DeleteConnection_FullMethodName:           {Permission: authz.ConnectionsManage},
		connectionv1.ConnectionService_GetAccessToken_FullMethodName:             {Permission: authz.ConnectionsUse, Kinds: tokenUsers},
		connectionv1.ConnectionService_Proxy_FullMethodName:                      {Permission: authz.ConnectionsUse, Kinds: tokenUsers},

		connectionv1.IntegrationService_ListIntegrations_FullMethodName:          {Permission: authz.IntegrationsRead},
		connectionv1.IntegrationService_GetIntegration_FullMethodName:            {Permission: authz.IntegrationsRead},
		connectionv1.IntegrationService_UpdateIntegrationSettings_FullMethodName: {Permission: authz.IntegrationsManage},

		// The outbox across tenants, for Bulkhead services only (identity's EventService rule).
		connectionv1.EventService_ListEvents_FullMethodName: {Permission: authz.EventsRead, Kinds: []claims.Kind{claims.KindService}, NoTenant: true},

		// Identity's tenant-deletion saga, acting as itself on no tenant of its own (the
		// vault-broker's ProvisionTenant rule), and only identity: this service holds
		// tenants.offboard too (to get a DELETING tenant's background token), and so might
		// another service one day, but the saga is identity's alone. The tenant is the
		// request's, and must be DELETING (the use case asks identity).
		connectionv1.TenantOffboardingService_OffboardTenant_FullMethodName: {
			Permission: authz.TenantsOffboard, Kinds: []claims.Kind{claims.KindService}, Services: []string{"identity"}, NoTenant: true,
		},
	}
	// Reflection describes the API, whose protos are published anyway.
	for _, m := range grpcserver.ReflectionMethods {
		p[m] = authz.Rule{Public: true}
	}
	return p
}
