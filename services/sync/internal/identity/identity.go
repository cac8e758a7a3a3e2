// Package identity is the sync service's client of the identity service: its own service token
// (platform client id and secret, renewed before expiry) and the kill switch (GetTenantStatus),
// which both authenticates API calls and cancels a suspended tenant's sync jobs.
package identity

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	"github.com/bulkhead/bulkhead/pkg/grpcserver"
	"github.com/bulkhead/bulkhead/pkg/logging"
)

// AudienceIdentity is the only audience of the service's own token towards identity.
const AudienceIdentity = "bulkhead.identity"

// AudienceVaultBroker is the service token's second audience: it is also sent as
// x-bulkhead-service-token on calls to the vault-broker (Encrypt and Decrypt of sensitive fields).
const AudienceVaultBroker = "bulkhead.vaultbroker"

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
	tokens   identityv1.TokenServiceClient
	tenants  identityv1.TenantServiceClient
	id, sec  string
	timeout  time.Duration
	mu       sync.Mutex
	token    string
	refresh  time.Time
	expireAt time.Time
	// Tenant background tokens by tenant and audience.
	tenantMu sync.Mutex
	tenantTs *lru.Cache[string, cachedToken]
}

type cachedToken struct {
	token   string
	refresh time.Time
}

// New checks cfg; it does not call identity yet.
func New(cfg Config) (*Client, error) {
	if cfg.Conn == nil || cfg.ClientID == "" || cfg.ClientSecret == "" {
		return nil, errors.New("identity: connection, client id and client secret are required")
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 5 * time.Second
	}
	cache, err := lru.New[string, cachedToken](10_000)
	if err != nil {
		return nil, err
	}
	return &Client{
		tokens: identityv1.NewTokenServiceClient(cfg.Conn), tenants: identityv1.NewTenantServiceClient(cfg.Conn),
		id: cfg.ClientID, sec: cfg.ClientSecret, timeout: cfg.CallTimeout, tenantTs: cache,
	}, nil
}

// ServiceToken returns the service's own token, renewed after two thirds of its lifetime (or
// kept through an identity blip while it is still valid).
func (c *Client) ServiceToken(ctx context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if c.token != "" && now.Before(c.refresh) {
		return c.token, nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, err := c.tokens.IssueToken(ctx, &identityv1.IssueTokenRequest{
		Credential: &identityv1.IssueTokenRequest_Platform{Platform: &identityv1.PlatformCredential{ClientId: c.id, ClientSecret: c.sec}},
		Audience:   []string{AudienceIdentity, AudienceVaultBroker},
	})
	if err != nil {
		if c.token != "" && now.Add(10*time.Second).Before(c.expireAt) {
			return c.token, nil
		}
		return "", fmt.Errorf("identity: issue service token: %w", err)
	}
	exp := resp.GetExpireTime().AsTime()
	if resp.GetAccessToken() == "" || !exp.After(now) {
		return "", errors.New("identity: issued an empty or expired service token")
	}
	c.token, c.expireAt, c.refresh = resp.GetAccessToken(), exp, now.Add(exp.Sub(now)*2/3)
	return c.token, nil
}

// outgoing returns ctx carrying the service's own token as bearer and service token: towards
// identity the service acts as itself.
func (c *Client) outgoing(ctx context.Context) (context.Context, error) {
	tok, err := c.ServiceToken(ctx)
	if err != nil {
		return nil, err
	}
	md := metadata.Pairs(grpcserver.MDAuthorization, "Bearer "+tok, grpcserver.MDServiceToken, tok)
	if id := logging.RequestID(ctx); id != "" {
		md.Set(grpcserver.MDRequestID, id)
	}
	return metadata.NewOutgoingContext(ctx, md), nil
}

// TenantToken returns a token for the service's background work in tenantID (identity's
// ExchangeToken with a tenant and no user: sub svc:<client id>, the tenant, and the service's
// tenant-permission scopes), for audiences, cached until two thirds of its lifetime. Identity
// refuses it for a suspended tenant.
func (c *Client) TenantToken(ctx context.Context, tenantID string, audiences ...string) (string, error) {
	key := tenantID + "|" + strings.Join(audiences, ",")
	now := time.Now()
	c.tenantMu.Lock()
	cached, ok := c.tenantTs.Get(key)
	c.tenantMu.Unlock()
	if ok && now.Before(cached.refresh) {
		return cached.token, nil
	}
	octx, err := c.outgoing(ctx)
	if err != nil {
		return "", err
	}
	octx, cancel := context.WithTimeout(octx, c.timeout)
	defer cancel()
	resp, err := c.tokens.ExchangeToken(octx, &identityv1.ExchangeTokenRequest{TenantId: tenantID, Audience: audiences})
	if err != nil {
		return "", fmt.Errorf("identity: tenant token: %w", err)
	}
	exp := resp.GetExpireTime().AsTime()
	if resp.GetAccessToken() == "" || !exp.After(now) {
		return "", errors.New("identity: exchanged an empty or expired tenant token")
	}
	c.tenantMu.Lock()
	c.tenantTs.Add(key, cachedToken{token: resp.GetAccessToken(), refresh: now.Add(exp.Sub(now) * 2 / 3)})
	c.tenantMu.Unlock()
	return resp.GetAccessToken(), nil
}

// TenantActive implements authn.TenantStatus: an unknown tenant is (false, nil).
func (c *Client) TenantActive(ctx context.Context, tenantID string) (bool, error) {
	ctx, err := c.outgoing(ctx)
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, err := c.tenants.GetTenantStatus(ctx, &identityv1.GetTenantStatusRequest{TenantId: tenantID})
	if status.Code(err) == codes.NotFound {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("identity: tenant status: %w", err)
	}
	return resp.GetStatus() == identityv1.TenantStatus_TENANT_STATUS_ACTIVE, nil
}
