// Package identity is the sync service's client of the identity service: a thin wrapper of
// pkg/identityclient (the service's own token, ExchangeToken, the kill switch) with what is the
// sync service's own:
//
//   - its service token carries the vault-broker's and the connection service's audiences too:
//     it is sent as x-bulkhead-service-token on calls to the broker (Encrypt and Decrypt of
//     sensitive fields) and is the credential of the connection events consumer;
//   - TenantToken, the service's token within a tenant for its background work (runs have no
//     incoming caller), cached per (tenant, audiences) until two thirds of its lifetime;
//   - the kill switch (GetTenantStatus), which both authenticates API calls and cancels a
//     suspended tenant's sync jobs.
package identity

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"google.golang.org/grpc"

	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	"github.com/bulkhead/bulkhead/pkg/authn"
	"github.com/bulkhead/bulkhead/pkg/identityclient"
)

// Audiences of the service's own token.
const (
	// AudienceIdentity is identity's audience.
	AudienceIdentity = identityclient.AudienceIdentity
	// AudienceVaultBroker is the token's second audience: it is also sent as
	// x-bulkhead-service-token on calls to the vault-broker.
	AudienceVaultBroker = "bulkhead.vaultbroker"
	// AudienceConnection is its third: it is the credential of the connection events consumer
	// (EventService.ListEvents, as the service itself).
	AudienceConnection = "bulkhead.connection"
)

// tenantTokenLife is assumed for a tenant token when deciding when to renew it:
// identityclient.Exchange returns the token without its expiry, and identity's token lifetime
// is configurable only from 5 to 15 minutes (its MinTokenTTL), so renewing after two thirds of
// 5 minutes is always early enough.
const tenantTokenLife = 5 * time.Minute

// Config configures a Client.
type Config struct {
	// Conn is a connection to identity's gRPC server; the Client does not close it.
	Conn grpc.ClientConnInterface
	// ClientID and ClientSecret are the service's platform credential on identity.
	ClientID, ClientSecret string
	// CallTimeout bounds each call [5s].
	CallTimeout time.Duration
}

// Client talks to identity as the sync service. Safe for concurrent use.
type Client struct {
	c *identityclient.Client
	// Tenant background tokens by tenant and audience.
	mu       sync.Mutex
	tenantTs *lru.Cache[string, cachedToken]
}

type cachedToken struct {
	token   string
	refresh time.Time
}

// New checks cfg; it does not call identity yet.
func New(cfg Config) (*Client, error) {
	c, err := identityclient.New(identityclient.Config{
		Conn: cfg.Conn, ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret,
		Audience: []string{AudienceIdentity, AudienceVaultBroker, AudienceConnection}, CallTimeout: cfg.CallTimeout,
	})
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	cache, err := lru.New[string, cachedToken](10_000)
	if err != nil {
		return nil, err
	}
	return &Client{c: c, tenantTs: cache}, nil
}

// ServiceToken returns the service's own token, renewed before it expires.
func (c *Client) ServiceToken(ctx context.Context) (string, error) { return c.c.ServiceToken(ctx) }

// TenantToken returns a token for the service's background work in tenantID (identity's
// ExchangeToken with a tenant and no user: sub svc:<client id>, the tenant, and the service's
// tenant-permission scopes), for audiences. Identity refuses it for a suspended tenant.
func (c *Client) TenantToken(ctx context.Context, tenantID string, audiences ...string) (string, error) {
	key := tenantID + "|" + strings.Join(audiences, ",")
	now := time.Now()
	c.mu.Lock()
	cached, ok := c.tenantTs.Get(key)
	c.mu.Unlock()
	if ok && now.Before(cached.refresh) {
		return cached.token, nil
	}
	tok, err := c.c.Exchange(ctx, "tenant token", &identityv1.ExchangeTokenRequest{TenantId: tenantID, Audience: audiences})
	if err != nil {
		return "", fmt.Errorf("identity: %w", err)
	}
	c.mu.Lock()
	c.tenantTs.Add(key, cachedToken{token: tok, refresh: now.Add(tenantTokenLife * 2 / 3)})
	c.mu.Unlock()
	return tok, nil
}

// TenantState implements authn.TenantStatus with GetTenantStatus. An unknown tenant is
// (StateInactive, nil).
func (c *Client) TenantState(ctx context.Context, tenantID string) (authn.TenantState, error) {
	return c.c.TenantState(ctx, tenantID)
}

// TenantStatus returns identity's status of tenantID; an unknown tenant is
// TENANT_STATUS_UNSPECIFIED with a nil error.
func (c *Client) TenantStatus(ctx context.Context, tenantID string) (identityv1.TenantStatus, error) {
	return c.c.TenantStatus(ctx, tenantID)
}
