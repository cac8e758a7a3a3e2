// Package identity is the connection service's client of the identity service: a thin wrapper
// of pkg/identityclient (the service token, ExchangeToken, the kill switch) with what is the
// connection service's own:
//
//   - its service token carries the vault-broker's audience too: it is sent as
//     x-bulkhead-service-token on calls to the vault-broker as well as to identity;
//   - UserToken, a token acting for a tenant's user, for the OAuth2 callback: the browser that
//     lands there carries no Bulkhead token, so the service acts for the user who started the
//     authorization — identity refuses a suspended tenant or a removed user there (the latter
//     is NotFound "user" for the caller).
package identity

import (
	"context"
	"time"

	"google.golang.org/grpc"

	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	"github.com/bulkhead/bulkhead/pkg/authn"
	"github.com/bulkhead/bulkhead/pkg/identityclient"
)

// Audiences of the tokens this client obtains.
const (
	AudienceIdentity    = identityclient.AudienceIdentity
	AudienceVaultBroker = "bulkhead.vaultbroker"
)

// Config configures a Client.
type Config struct {
	// Conn is a connection to identity's gRPC server. The Client does not close it.
	Conn grpc.ClientConnInterface
	// ClientID and ClientSecret are the service's platform credential on identity.
	ClientID     string
	ClientSecret string
	// CallTimeout bounds each call to identity (default 5s).
	CallTimeout time.Duration
	// Now is the clock for renewal decisions; nil means time.Now.
	Now func() time.Time
}

// Client obtains the service's tokens from identity. Safe for concurrent use.
type Client struct {
	c *identityclient.Client
}

// New checks cfg and returns a Client. It does not call identity yet.
func New(cfg Config) (*Client, error) {
	c, err := identityclient.New(identityclient.Config{
		Conn: cfg.Conn, ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret,
		Audience:         []string{AudienceIdentity, AudienceVaultBroker},
		NotFoundResource: "user",
		CallTimeout:      cfg.CallTimeout, Now: cfg.Now,
	})
	if err != nil {
		return nil, err
	}
	return &Client{c: c}, nil
}

// Token returns the service's own token (grpcclient.TokenSource), renewed before it expires.
func (c *Client) Token(ctx context.Context) (string, error) { return c.c.ServiceToken(ctx) }

// UserToken returns a token for userID of tenantID (the tenant's background principal when
// userID is empty), for the vault-broker, with this service recorded as the actor. Identity
// refuses a suspended tenant (TENANT_SUSPENDED) and an unknown user (NOT_FOUND).
func (c *Client) UserToken(ctx context.Context, tenantID, userID string) (string, error) {
	return c.c.Exchange(ctx, "exchange token", &identityv1.ExchangeTokenRequest{
		TenantId: tenantID, UserId: userID, Audience: []string{AudienceVaultBroker},
	})
}

// TenantState implements authn.TenantStatus with GetTenantStatus. An unknown tenant is
// (StateInactive, nil).
func (c *Client) TenantState(ctx context.Context, tenantID string) (authn.TenantState, error) {
	return c.c.TenantState(ctx, tenantID)
}
