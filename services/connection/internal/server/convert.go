package server

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	connectionv1 "github.com/bulkhead/bulkhead/gen/bulkhead/connection/v1"
	"github.com/bulkhead/bulkhead/services/connection/internal/app"
	"github.com/bulkhead/bulkhead/services/connection/internal/catalog"
	"github.com/bulkhead/bulkhead/services/connection/internal/store"
)

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func toScope(s store.Scope) connectionv1.ConnectionScope {
	switch s {
	case store.ScopeOrg:
		return connectionv1.ConnectionScope_CONNECTION_SCOPE_ORG
	case store.ScopeUser:
		return connectionv1.ConnectionScope_CONNECTION_SCOPE_USER
	}
	return connectionv1.ConnectionScope_CONNECTION_SCOPE_UNSPECIFIED
}

func fromScope(s connectionv1.ConnectionScope) store.Scope {
	switch s {
	case connectionv1.ConnectionScope_CONNECTION_SCOPE_ORG:
		return store.ScopeOrg
	case connectionv1.ConnectionScope_CONNECTION_SCOPE_USER:
		return store.ScopeUser
	}
	return ""
}

func toStatus(s store.Status) connectionv1.ConnectionStatus {
	switch s {
	case store.StatusActive:
		return connectionv1.ConnectionStatus_CONNECTION_STATUS_ACTIVE
	case store.StatusNeedsReauth:
		return connectionv1.ConnectionStatus_CONNECTION_STATUS_NEEDS_REAUTH
	case store.StatusDisabled:
		return connectionv1.ConnectionStatus_CONNECTION_STATUS_DISABLED
	case store.StatusRevoked:
		return connectionv1.ConnectionStatus_CONNECTION_STATUS_REVOKED
	}
	return connectionv1.ConnectionStatus_CONNECTION_STATUS_UNSPECIFIED
}

func fromStatus(s connectionv1.ConnectionStatus) store.Status {
	switch s {
	case connectionv1.ConnectionStatus_CONNECTION_STATUS_ACTIVE:
		return store.StatusActive
	case connectionv1.ConnectionStatus_CONNECTION_STATUS_NEEDS_REAUTH:
		return store.StatusNeedsReauth
	case connectionv1.ConnectionStatus_CONNECTION_STATUS_DISABLED:
		return store.StatusDisabled
	case connectionv1.ConnectionStatus_CONNECTION_STATUS_REVOKED:
		return store.StatusRevoked
	}
	return ""
}

func toAuthType(a store.AuthType) connectionv1.AuthType {
	switch a {
	case store.AuthOAuth2:
		return connectionv1.AuthType_AUTH_TYPE_OAUTH2
	case store.AuthClientCredentials:
		return connectionv1.AuthType_AUTH_TYPE_OAUTH2_CLIENT_CREDENTIALS
	case store.AuthAPIKey:
		return connectionv1.AuthType_AUTH_TYPE_API_KEY
	case store.AuthBasic:
		return connectionv1.AuthType_AUTH_TYPE_BASIC
	}
	return connectionv1.AuthType_AUTH_TYPE_UNSPECIFIED
}

func catalogAuthType(a catalog.AuthType) connectionv1.AuthType {
	switch a {
	case catalog.AuthOAuth2AuthorizationCode:
		return connectionv1.AuthType_AUTH_TYPE_OAUTH2
	case catalog.AuthOAuth2ClientCredentials:
		return connectionv1.AuthType_AUTH_TYPE_OAUTH2_CLIENT_CREDENTIALS
	case catalog.AuthAPIKey:
		return connectionv1.AuthType_AUTH_TYPE_API_KEY
	case catalog.AuthBasic:
		return connectionv1.AuthType_AUTH_TYPE_BASIC
	}
	return connectionv1.AuthType_AUTH_TYPE_UNSPECIFIED
}

func toRevocation(r store.RevocationState) connectionv1.RevocationState {
	switch r {
	case store.RevocationPending:
		return connectionv1.RevocationState_REVOCATION_STATE_PENDING
	case store.RevocationConfirmed:
		return connectionv1.RevocationState_REVOCATION_STATE_CONFIRMED
	case store.RevocationNotSupported:
		return connectionv1.RevocationState_REVOCATION_STATE_NOT_SUPPORTED
	case store.RevocationFailed:
		return connectionv1.RevocationState_REVOCATION_STATE_FAILED
	}
	return connectionv1.RevocationState_REVOCATION_STATE_UNSPECIFIED
}

func toConnection(c store.Connection) *connectionv1.Connection {
	return &connectionv1.Connection{
		TenantId:     c.TenantID,
		ConnectionId: c.ID,
		Integration:  c.Integration,
		Scope:        toScope(c.Scope),
		OwnerUserId:  c.OwnerUserID,
		Creator:      c.Creator,
		Status:       toStatus(c.Status),
		Health: &connectionv1.Health{
			LastRefreshTime:        ts(c.LastRefreshAt),
			LastFailureTime:        ts(c.LastFailureAt),
			LastFailureReason:      c.LastFailureReason,
			ConsecutiveFailures:    int32(c.ConsecutiveFailures),
			AccessTokenExpireTime:  ts(c.AccessExpiresAt),
			RefreshTokenExpireTime: ts(c.RefreshExpiresAt),
			NextCheckTime:          ts(c.NextCheckAt),
		},
		Fields:          c.Fields,
		Tags:            c.Tags,
		RevocationState: toRevocation(c.RevocationState),
		CreateTime:      ts(c.CreatedAt),
		UpdateTime:      ts(c.UpdatedAt),
		AuthType:        toAuthType(c.AuthType),
		GrantedScopes:   c.GrantedScopes,

		RevocationFailureReason: c.RevocationFailureReason,
	}
}

func toIntegration(i app.Integration) *connectionv1.Integration {
	p := i.Provider
	out := &connectionv1.Integration{
		Key:                    p.Key,
		DisplayName:            p.DisplayName,
		AuthType:               catalogAuthType(p.AuthType),
		DefaultConnectionScope: toScope(store.Scope(p.DefaultConnectionScope)),
		PlatformOauthApp:       i.PlatformApp,
		Settings: &connectionv1.IntegrationSettings{
			TenantId:             i.Settings.TenantID,
			Integration:          p.Key,
			Enabled:              i.Settings.Enabled,
			OauthClientId:        i.Settings.OAuthClientID,
			OauthClientSecretSet: i.Settings.OAuthSecretID != "",
			AllowedScopes:        i.Settings.AllowedScopes,
			ConnectionScope:      toScope(i.Scope),
			UpdateTime:           ts(i.Settings.UpdatedAt),
		},
	}
	if p.OAuth2 != nil {
		out.DefaultScopes = p.OAuth2.DefaultScopes
		out.SupportsRevocation = p.OAuth2.RevocationURL != ""
	}
	for _, f := range p.Fields {
		out.Fields = append(out.Fields, &connectionv1.IntegrationField{Name: f.Name, Description: f.Description, Required: f.Required})
	}
	return out
}
