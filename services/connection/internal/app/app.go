// Package app holds the connection service's use cases. Handlers (internal/server) have already
// authenticated the caller, checked the method's rule and validated the request; the use cases
// decide who may act on which connection (an org-level connection is managed by connection
// admins; a user-level one is used only by its owner), talk to providers, and keep every
// credential in the vault-broker. Each use case reads the caller from the verified claims in
// the context, never from a request field.
package app

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sync/singleflight"

	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/pkg/authz"
	"github.com/bulkhead/bulkhead/pkg/claims"
	"github.com/bulkhead/bulkhead/services/connection/internal/broker"
	"github.com/bulkhead/bulkhead/services/connection/internal/catalog"
	"github.com/bulkhead/bulkhead/services/connection/internal/egress"
	"github.com/bulkhead/bulkhead/services/connection/internal/fairness"
	"github.com/bulkhead/bulkhead/services/connection/internal/store"
)

// Reasons of FAILED_PRECONDITION errors clients branch on (ErrorInfo.Reason). Part of the API.
const (
	ReasonNeedsReauth         = "CONNECTION_NEEDS_REAUTH"
	ReasonDisabled            = "CONNECTION_DISABLED"
	ReasonRevoked             = "CONNECTION_REVOKED"
	ReasonIntegrationDisabled = "INTEGRATION_DISABLED"
	ReasonScopeMismatch       = "CONNECTION_SCOPE_MISMATCH"
	ReasonOAuthAppMissing     = "OAUTH_APP_NOT_CONFIGURED"
	ReasonWrongAuthType       = "WRONG_AUTH_TYPE"
)

// DefaultRevocationGiveUp is how long an unconfirmed provider revocation is retried before it
// is given up (config.DefaultRevocationGiveUp is the service's setting).
const DefaultRevocationGiveUp = 72 * time.Hour

// Credentials is the vault-broker, acting for the principal in the context (*broker.Client).
type Credentials interface {
	Get(ctx context.Context, tenantID, id string, version int64) (broker.Credential, error)
	Put(ctx context.Context, tenantID, id string, data map[string]string, expected int64) (int64, error)
	Delete(ctx context.Context, tenantID, id string) error
	Encrypt(ctx context.Context, tenantID string, plaintext []byte) (string, error)
	Decrypt(ctx context.Context, tenantID, ciphertext string) ([]byte, error)
}

// UserTokens obtains a token acting for a tenant's user (or the tenant's background principal
// when userID is empty), for calls made without an incoming caller: the OAuth2 callback.
type UserTokens interface {
	UserToken(ctx context.Context, tenantID, userID string) (string, error)
}

// OAuthClient is an OAuth client registered at a provider.
type OAuthClient struct {
	ClientID     string
	ClientSecret string `json:"-"`
}

// Config holds the use cases' dependencies and settings.
type Config struct {
	Store       store.Store
	Catalog     *catalog.Catalog
	Credentials Credentials
	UserTokens  UserTokens
	// Tenants reports identity's state of a tenant (OffboardTenant's DELETING check); nil
	// makes OffboardTenant fail.
	Tenants TenantStates
	// PlatformApps are the platform's own OAuth apps, by integration key; a tenant without its
	// own app uses these.
	PlatformApps map[string]OAuthClient
	// CallbackURL is the OAuth2 redirect URI registered at providers (the HTTP callback).
	CallbackURL string
	// ReturnURLPrefixes are the allowed prefixes of StartAuthorization's return_url.
	ReturnURLPrefixes []string
	// RefreshMargin: an access token expiring within it is refreshed (default 5m).
	RefreshMargin time.Duration
	// CheckInterval: how often a credential without expiry is tested (default 24h).
	CheckInterval time.Duration
	// StateTTL is how long an authorization may take (default 10m, at most 1h).
	StateTTL time.Duration
	// RevocationGiveUp: a revocation the provider has not confirmed this long after the
	// connection was revoked is given up (failed, credential deleted); default
	// DefaultRevocationGiveUp.
	RevocationGiveUp time.Duration
	// ProviderTimeout bounds one call of the service's own to a provider (token, revocation
	// and test endpoints); default 10s.
	ProviderTimeout time.Duration
	// Egress guards every call to a provider (SSRF): Proxy's, and the service's own token,
	// revocation and test calls; nil builds one with no allow-listed hosts that accepts
	// http:// only when the catalog allows loopback providers.
	Egress *egress.Guard
	// Fairness holds Proxy's rate limit and circuit breaker per (tenant, integration); nil
	// builds one with fairness's defaults.
	Fairness *fairness.Set
	// ProxyMaxResponse bounds the body Proxy returns (default 2 MiB); longer ones are cut
	// and marked truncated.
	ProxyMaxResponse int
	// Now is the clock of every expiry decision; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// App holds every use case. Safe for concurrent use.
type App struct {
	store            store.Store
	catalog          *catalog.Catalog
	creds            Credentials
	userTokens       UserTokens
	tenants          TenantStates
	platform         map[string]OAuthClient
	callbackURL      string
	returnURLs       []string
	margin           time.Duration
	checkEvery       time.Duration
	stateTTL         time.Duration
	providerTimeout  time.Duration
	revocationGiveUp time.Duration
	now              func() time.Time
	log              *slog.Logger
	egress           *egress.Guard
	fairness         *fairness.Set
	maxProxyRes      int

	// refreshes collapses concurrent refreshes of one connection in this process into one;
	// the row lock does the same across processes.
	refreshes singleflight.Group
}

// New checks cfg and builds the use cases.
func New(cfg Config) (*App, error) {
	switch {
	case cfg.Store == nil, cfg.Catalog == nil, cfg.Credentials == nil, cfg.UserTokens == nil:
		return nil, errors.New("app: Store, Catalog, Credentials and UserTokens are required")
	case cfg.CallbackURL == "":
		return nil, errors.New("app: CallbackURL is required")
	}
	if cfg.RefreshMargin <= 0 {
		cfg.RefreshMargin = 5 * time.Minute
	}
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = 24 * time.Hour
	}
	if cfg.StateTTL <= 0 || cfg.StateTTL > time.Hour {
		cfg.StateTTL = 10 * time.Minute
	}
	if cfg.RevocationGiveUp <= 0 {
		cfg.RevocationGiveUp = DefaultRevocationGiveUp
	}
	if cfg.ProviderTimeout <= 0 {
		cfg.ProviderTimeout = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Egress == nil {
		g, err := egress.New(egress.Config{AllowHTTP: cfg.Catalog.AllowsLoopback()})
		if err != nil {
			return nil, fmt.Errorf("app: %w", err)
		}
		cfg.Egress = g
	}
	if cfg.Fairness == nil {
		f, err := fairness.New(fairness.Config{})
		if err != nil {
			return nil, fmt.Errorf("app: %w", err)
		}
		cfg.Fairness = f
	}
	if cfg.ProxyMaxResponse <= 0 {
		cfg.ProxyMaxResponse = DefaultProxyMaxResponse
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &App{
		store: cfg.Store, catalog: cfg.Catalog, creds: cfg.Credentials, userTokens: cfg.UserTokens, tenants: cfg.Tenants,
		platform: cfg.PlatformApps, callbackURL: cfg.CallbackURL, returnURLs: cfg.ReturnURLPrefixes,
		margin: cfg.RefreshMargin, checkEvery: cfg.CheckInterval, stateTTL: cfg.StateTTL,
		providerTimeout: cfg.ProviderTimeout, revocationGiveUp: cfg.RevocationGiveUp, now: cfg.Now, log: cfg.Logger,
		egress: cfg.Egress, fairness: cfg.Fairness, maxProxyRes: cfg.ProxyMaxResponse,
	}, nil
}

// caller returns the verified claims of the request.
func caller(ctx context.Context) (*claims.Claims, error) {
	c, ok := claims.FromContext(ctx)
	if !ok || c.TenantID == "" {
		return nil, apierr.Unauthenticated("missing credentials")
	}
	return c, nil
}

// IsAdmin reports whether c is a connection admin: it holds connections.manage and
// integrations.manage. Members hold connections.manage too (for their own user-level
// connections), so integrations.manage — owners and admins, or a service account granted it —
// is what marks the admin. Only admins manage org-level connections and see other users'
// user-level connections (metadata only; they never use them).
func IsAdmin(c *claims.Claims) bool {
	return authz.Has(c, authz.ConnectionsManage) && authz.Has(c, authz.IntegrationsManage)
}

// readActor is the store view for reading and managing: admins see every user-level
// connection of their tenant.
func readActor(c *claims.Claims) store.Actor {
	return store.Actor{TenantID: c.TenantID, UserID: c.UserID(), Admin: IsAdmin(c)}
}

// useActor is the store view for using a connection: never widened for admins, so another
// user's connection is invisible on every path that hands out a credential.
func useActor(c *claims.Claims) store.Actor {
	return store.Actor{TenantID: c.TenantID, UserID: c.UserID()}
}

// canManage reports whether c may change conn (disable, revoke, re-authorize is narrower).
func canManage(c *claims.Claims, conn store.Connection) bool {
	if conn.Scope == store.ScopeUser && conn.OwnerUserID == c.UserID() {
		return authz.Has(c, authz.ConnectionsManage)
	}
	return IsAdmin(c)
}

// storeError maps store errors for resource.
func storeError(err error, resource string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound):
		return apierr.NotFound(resource).WithCause(err)
	case errors.Is(err, store.ErrRevoked):
		return apierr.FailedPrecondition(ReasonRevoked, "the connection is revoked").WithCause(err)
	}
	return err
}

// usable refuses a connection that cannot hand out a credential, with a reason per state.
func usable(c store.Connection) error {
	switch {
	case c.Status == store.StatusRevoked:
		return apierr.FailedPrecondition(ReasonRevoked, "the connection is revoked")
	case c.Status == store.StatusDisabled:
		return apierr.FailedPrecondition(ReasonDisabled, "the connection is disabled")
	case !c.IntegrationEnabled:
		return apierr.FailedPrecondition(ReasonIntegrationDisabled, "the integration is disabled for this tenant")
	case c.Status == store.StatusNeedsReauth:
		return apierr.FailedPrecondition(ReasonNeedsReauth, "the connection needs to be authorized again")
	}
	return nil
}

// integration is a catalog entry with the tenant's settings applied.
type integration struct {
	provider *catalog.Provider
	settings store.Settings // defaults when the tenant never changed them
	scope    store.Scope    // effective connection scope
}

// integration looks up key in the catalog and the tenant's settings for it.
func (a *App) integration(ctx context.Context, tenantID, key string) (integration, error) {
	p, ok := a.catalog.Get(key)
	if !ok {
		return integration{}, apierr.NotFound("integration")
	}
	s, err := a.store.GetSettings(ctx, tenantID, key)
	if errors.Is(err, store.ErrNotFound) {
		s, err = store.Settings{TenantID: tenantID, Integration: key, Enabled: true}, nil
	}
	if err != nil {
		return integration{}, err
	}
	scope := store.Scope(p.DefaultConnectionScope)
	if s.ConnectionScope != "" {
		scope = s.ConnectionScope
	}
	return integration{provider: p, settings: s, scope: scope}, nil
}

// authTypeOf maps the catalog's auth type to the stored one.
func authTypeOf(p *catalog.Provider) store.AuthType {
	switch p.AuthType {
	case catalog.AuthOAuth2AuthorizationCode:
		return store.AuthOAuth2
	case catalog.AuthOAuth2ClientCredentials:
		return store.AuthClientCredentials
	case catalog.AuthAPIKey:
		return store.AuthAPIKey
	}
	return store.AuthBasic
}

// resolveScope checks a requested scope against the integration's and whether c may create a
// connection of it.
func resolveScope(c *claims.Claims, ic integration, requested store.Scope) (store.Scope, error) {
	if requested != "" && requested != ic.scope {
		return "", apierr.FailedPrecondition(ReasonScopeMismatch,
			"this tenant's %s connections are %s-level", ic.provider.Key, ic.scope)
	}
	switch ic.scope {
	case store.ScopeOrg:
		if !IsAdmin(c) {
			return "", apierr.PermissionDenied("only connection admins create org-level connections")
		}
	case store.ScopeUser:
		if c.Kind != claims.KindUser {
			return "", apierr.PermissionDenied("user-level connections belong to users")
		}
	}
	return ic.scope, nil
}

// resolveFields checks connection fields against the catalog and renders the endpoints.
func resolveFields(p *catalog.Provider, fields map[string]string) (catalog.Endpoints, error) {
	e, err := p.Resolve(fields)
	var fe *catalog.FieldError
	if errors.As(err, &fe) {
		return catalog.Endpoints{}, apierr.InvalidArgument("fields."+fe.Field, "connection field %q is %s", fe.Field, fe.Code)
	}
	if err != nil {
		return catalog.Endpoints{}, fmt.Errorf("app: resolve %s: %w", p.Key, err)
	}
	return e, nil
}

// newID returns a random UUID (122 random bits): connection, state and secret ids.
func newID() string { return uuid.NewString() }

// --- page tokens ---

// pageToken is the opaque next_page_token: the position of the last item returned. It is not
// signed: every list is scoped by row-level security, so a forged token can at worst skip
// items the caller may see anyway.
type pageToken struct {
	T time.Time `json:"t"`
	I string    `json:"i"`
}

// EncodePageToken renders a cursor as a page token ("" for none).
func EncodePageToken(c *store.Cursor) string {
	if c == nil {
		return ""
	}
	b, _ := json.Marshal(pageToken{T: c.CreatedAt, I: c.ID}) // a time and a string cannot fail
	return base64.RawURLEncoding.EncodeToString(b)
}

// DecodePageToken parses a page token ("" is the first page).
func DecodePageToken(s string) (*store.Cursor, error) {
	if s == "" {
		return nil, nil
	}
	bad := apierr.InvalidArgument("page_token", "invalid page token")
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, bad
	}
	var t pageToken
	if err := json.Unmarshal(b, &t); err != nil || t.T.IsZero() {
		return nil, bad
	}
	if _, err := uuid.Parse(t.I); err != nil {
		return nil, bad
	}
	return &store.Cursor{CreatedAt: t.T, ID: t.I}, nil
}

// validTags trims nothing and refuses blank tags (the proto bounds the rest).
func validTags(tags []string) error {
	for _, t := range tags {
		if strings.TrimSpace(t) == "" {
			return apierr.InvalidArgument("tags", "tags must not be blank")
		}
	}
	return nil
}
