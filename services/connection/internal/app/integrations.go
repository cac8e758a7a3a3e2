package app

import (
	"context"
	"errors"

	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/services/connection/internal/broker"
	"github.com/bulkhead/bulkhead/services/connection/internal/catalog"
	"github.com/bulkhead/bulkhead/services/connection/internal/store"
)

// Integration is a catalog entry with the tenant's settings.
type Integration struct {
	Provider *catalog.Provider
	Settings store.Settings
	// Scope is the effective connection scope.
	Scope store.Scope
	// PlatformApp says whether the platform has an OAuth app for it.
	PlatformApp bool
}

func (a *App) describe(ic integration) Integration {
	app, ok := a.platform[ic.provider.Key]
	return Integration{Provider: ic.provider, Settings: ic.settings, Scope: ic.scope, PlatformApp: ok && app.ClientID != ""}
}

// ListIntegrations lists the catalog with the caller's tenant's settings.
func (a *App) ListIntegrations(ctx context.Context) ([]Integration, error) {
	c, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := a.store.ListSettings(ctx, c.TenantID)
	if err != nil {
		return nil, err
	}
	byKey := make(map[string]store.Settings, len(rows))
	for _, s := range rows {
		byKey[s.Integration] = s
	}
	var out []Integration
	for _, p := range a.catalog.List() {
		s, ok := byKey[p.Key]
		if !ok {
			s = store.Settings{TenantID: c.TenantID, Integration: p.Key, Enabled: true}
		}
		scope := store.Scope(p.DefaultConnectionScope)
		if s.ConnectionScope != "" {
			scope = s.ConnectionScope
		}
		out = append(out, a.describe(integration{provider: p, settings: s, scope: scope}))
	}
	return out, nil
}

// GetIntegration returns one integration with the caller's tenant's settings.
func (a *App) GetIntegration(ctx context.Context, key string) (Integration, error) {
	c, err := caller(ctx)
	if err != nil {
		return Integration{}, err
	}
	ic, err := a.integration(ctx, c.TenantID, key)
	if err != nil {
		return Integration{}, err
	}
	return a.describe(ic), nil
}

// SettingsUpdate changes a tenant's integration settings; nil fields are left unchanged.
type SettingsUpdate struct {
	Enabled *bool
	// OAuthApp sets the tenant's own OAuth app; ClearOAuthApp removes it.
	OAuthApp      *OAuthClient
	ClearOAuthApp bool
	AllowedScopes *[]string
	Scope         store.Scope // "" leaves it unchanged
}

// UpdateIntegrationSettings applies u. A new OAuth client secret is written to the
// vault-broker first (check-and-set on the tenant's secret entry), then the settings row; a
// removed app's secret is deleted after the row no longer points at it.
func (a *App) UpdateIntegrationSettings(ctx context.Context, key string, u SettingsUpdate) (Integration, error) {
	c, err := caller(ctx)
	if err != nil {
		return Integration{}, err
	}
	p, ok := a.catalog.Get(key)
	if !ok {
		return Integration{}, apierr.NotFound("integration")
	}
	if (u.OAuthApp != nil || u.ClearOAuthApp) && authTypeOf(p) != store.AuthOAuth2 {
		return Integration{}, apierr.InvalidArgument("oauth_app", "%s does not use an OAuth app", key)
	}
	var secretID string
	if u.OAuthApp != nil {
		// Reuse the tenant's secret entry when it has one, so the secret's versions stay in
		// one place; a fresh random id otherwise.
		secretID = newID()
		if cur, err := a.store.GetSettings(ctx, c.TenantID, key); err == nil && cur.OAuthSecretID != "" {
			secretID = cur.OAuthSecretID
		} else if err != nil && !errors.Is(err, store.ErrNotFound) {
			return Integration{}, err
		}
		var expected int64
		if cur, err := a.creds.Get(ctx, c.TenantID, secretID, 0); err == nil {
			expected = cur.Version
		} else if !errors.Is(err, broker.ErrNotFound) {
			return Integration{}, err
		}
		if _, err := a.creds.Put(ctx, c.TenantID, secretID, map[string]string{credOAuthSecret: u.OAuthApp.ClientSecret}, expected); err != nil {
			if errors.Is(err, broker.ErrConflict) {
				return Integration{}, apierr.Aborted("the OAuth app was changed concurrently: retry")
			}
			return Integration{}, err
		}
	}
	var removed string
	s, err := a.store.UpdateSettings(ctx, c.TenantID, key, func(s *store.Settings) error {
		if u.Enabled != nil {
			s.Enabled = *u.Enabled
		}
		switch {
		case u.OAuthApp != nil:
			s.OAuthClientID, s.OAuthSecretID = u.OAuthApp.ClientID, secretID
		case u.ClearOAuthApp:
			removed = s.OAuthSecretID
			s.OAuthClientID, s.OAuthSecretID = "", ""
		}
		if u.AllowedScopes != nil {
			s.AllowedScopes = *u.AllowedScopes
		}
		if u.Scope != "" {
			s.ConnectionScope = u.Scope
		}
		return nil
	})
	if err != nil {
		return Integration{}, err
	}
	if removed != "" {
		if err := a.creds.Delete(ctx, c.TenantID, removed); err != nil {
			a.log.ErrorContext(ctx, "removed OAuth client secret could not be deleted", "integration", key, "error", err.Error())
		}
	}
	scope := store.Scope(p.DefaultConnectionScope)
	if s.ConnectionScope != "" {
		scope = s.ConnectionScope
	}
	return a.describe(integration{provider: p, settings: s, scope: scope}), nil
}
