// Package identity is the connection service's client of the identity service. It holds the
// service's only standing credential towards identity (its platform client id and secret) and
// turns it into:
//
//   - its own service token (sub svc:<client id>), sent as x-bulkhead-service-token on calls to
//     the vault-broker and as the credential of calls to identity, cached and renewed before it
//     expires;
//   - a token acting for a tenant's user (ExchangeToken), for the OAuth2 callback: the browser
//     that lands there carries no Bulkhead token, so the service acts for the user who started
//     the authorization — identity refuses a suspended tenant or a removed user there;
//   - an authn.TenantStatus (the kill switch) backed by GetTenantStatus.
//
// It sets credentials itself rather than through pkg/grpcclient: towards identity the service
// acts as itself, never as its caller.
package identity

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/pkg/grpcserver"
	"github.com/bulkhead/bulkhead/pkg/logging"
)

// Audiences of the tokens this client obtains.
const (
	AudienceIdentity    = "bulkhead.identity"
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
	tokens   identityv1.TokenServiceClient
	tenants  identityv1.TenantServiceClient
	clientID string
	secret   string
	timeout  time.Duration
	now      func() time.Time

	// mu serializes renewals: concurrent callers at expiry wait for one IssueToken.
	mu        sync.Mutex
	token     string
	expires   time.Time
	refreshAt time.Time
}

// New checks cfg and returns a Client. It does not call identity yet.
func New(cfg Config) (*Client, error) {
	switch {
	case cfg.Conn == nil:
		return nil, errors.New("identity client: a connection to identity is required")
	case cfg.ClientID == "" || cfg.ClientSecret == "":
		return nil, errors.New("identity client: the service's client id and secret are required")
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Client{
		tokens: identityv1.NewTokenServiceClient(cfg.Conn), tenants: identityv1.NewTenantServiceClient(cfg.Conn),
		clientID: cfg.ClientID, secret: cfg.ClientSecret, timeout: cfg.CallTimeout, now: cfg.Now,
	}, nil
}

// Token returns the service's own token (grpcclient.TokenSource), issuing a new one when there
// is none or the current one has passed two thirds of its lifetime. If renewal fails while the
// current token still has time left, the current one is returned.
func (c *Client) Token(ctx context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if c.token != "" && now.Before(c.refreshAt) {
		return c.token, nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, err := c.tokens.IssueToken(ctx, &identityv1.IssueTokenRequest{
		Credential: &identityv1.IssueTokenRequest_Platform{Platform: &identityv1.PlatformCredential{
			ClientId: c.clientID, ClientSecret: c.secret,
		}},
		Audience: []string{AudienceIdentity, AudienceVaultBroker},
	})
	if err != nil {
		if c.token != "" && now.Add(10*time.Second).Before(c.expires) {
			return c.token, nil // ride out an identity blip on a token that is still good
		}
		return "", callError("issue service token", err)
	}
	exp := resp.GetExpireTime().AsTime()
	if resp.GetAccessToken() == "" || !exp.After(now) {
		return "", apierr.Internal(errors.New("identity issued an empty or expired service token"))
	}
	c.token, c.expires, c.refreshAt = resp.GetAccessToken(), exp, now.Add(exp.Sub(now)*2/3)
	return c.token, nil
}

// outgoing returns ctx carrying the service's own token as both credentials: towards identity
// the service acts as itself.
func (c *Client) outgoing(ctx context.Context) (context.Context, error) {
	tok, err := c.Token(ctx)
	if err != nil {
		return nil, err
	}
	md := metadata.Pairs(grpcserver.MDAuthorization, "Bearer "+tok, grpcserver.MDServiceToken, tok)
	if id := logging.RequestID(ctx); id != "" {
		md.Set(grpcserver.MDRequestID, id)
	}
	return metadata.NewOutgoingContext(ctx, md), nil
}

// UserToken returns a token for userID of tenantID (the tenant's background principal when
// userID is empty), for the vault-broker, with this service recorded as the actor. Identity
// refuses a suspended tenant (TENANT_SUSPENDED) and an unknown user (NOT_FOUND).
func (c *Client) UserToken(ctx context.Context, tenantID, userID string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	octx, err := c.outgoing(ctx)
	if err != nil {
		return "", err
	}
	resp, err := c.tokens.ExchangeToken(octx, &identityv1.ExchangeTokenRequest{
		TenantId: tenantID, UserId: userID, Audience: []string{AudienceVaultBroker},
	})
	if err != nil {
		return "", callError("exchange token", err)
	}
	return resp.GetAccessToken(), nil
}

// TenantActive implements authn.TenantStatus with GetTenantStatus. An unknown tenant is
// (false, nil).
func (c *Client) TenantActive(ctx context.Context, tenantID string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	octx, err := c.outgoing(ctx)
	if err != nil {
		return false, err
	}
	resp, err := c.tenants.GetTenantStatus(octx, &identityv1.GetTenantStatusRequest{TenantId: tenantID})
	if status.Code(err) == codes.NotFound {
		return false, nil
	}
	if err != nil {
		return false, callError("tenant status", err)
	}
	return resp.GetStatus() == identityv1.TenantStatus_TENANT_STATUS_ACTIVE, nil
}

// callError maps identity's answer: identity down → Unavailable; the tenant suspended →
// TenantSuspended; a missing tenant or user → NotFound; anything else (the service's own
// credential refused) → Internal, logged.
func callError(op string, err error) error {
	cause := fmt.Errorf("identity: %s: %w", op, err)
	switch st := status.Convert(err); {
	case errors.Is(err, context.Canceled):
		return err
	case st.Code() == codes.Unavailable, st.Code() == codes.DeadlineExceeded, st.Code() == codes.ResourceExhausted:
		return apierr.Unavailable("identity", time.Second).WithCause(cause)
	case st.Code() == codes.PermissionDenied && reasonOf(st) == apierr.ReasonTenantSuspended:
		return apierr.TenantSuspended().WithCause(cause)
	case st.Code() == codes.NotFound:
		return apierr.NotFound("user").WithCause(cause)
	}
	return apierr.Internal(cause)
}

func reasonOf(st *status.Status) string {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == apierr.Domain {
			return info.GetReason()
		}
	}
	return ""
}
