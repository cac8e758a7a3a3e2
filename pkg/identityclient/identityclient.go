// Package identityclient is a Bulkhead service's client of the identity service. It holds the
// service's only standing credential towards identity (its platform client id and secret) and
// turns it into:
//
//   - the service's own token (sub svc:<client id>), obtained with IssueToken, cached and
//     renewed before it expires;
//   - tokens obtained with ExchangeToken while acting as the service (Exchange); what to
//     exchange for is the service's business (a tenant user's token for the connection service,
//     a Vault JWT from the caller's own token for the vault-broker), so each service keeps that
//     part as a thin wrapper in its own internal/identity package;
//   - an authn.TenantStatus (the kill switch) backed by GetTenantStatus.
//
// It sets credentials itself rather than through pkg/grpcclient: grpcclient forwards the
// incoming principal's token, and towards identity a service must act as itself, never as its
// caller.
//
// Tests. This package's own tests cover what needs no identity server (configuration, the
// mapping of identity's answers, identity unreachable over real loopback gRPC). The behaviour
// that needs a real identity — renewal at two thirds of the token's life, the token's claims,
// exchanges, the kill switch — is tested in the services that wrap this package
// (services/vaultbroker/internal/identity, services/connection/internal/identity) against
// services/identity/identitytest. It cannot be tested here: pkg would have to require the
// services/identity module, which itself requires pkg — a module cycle that drags identity's
// dependencies into every service's build list — and a hand-written stand-in for identity
// would test the stand-in, not identity.
package identityclient

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/pkg/authn"
	"github.com/bulkhead/bulkhead/pkg/grpcserver"
	"github.com/bulkhead/bulkhead/pkg/logging"
)

// AudienceIdentity is identity's audience: the service token must carry it to call identity.
const AudienceIdentity = "bulkhead.identity"

// Config configures a Client.
type Config struct {
	// Conn is a connection to identity's gRPC server. The Client does not close it.
	Conn grpc.ClientConnInterface
	// ClientID and ClientSecret are the service's platform credential on identity.
	ClientID     string
	ClientSecret string
	// Audience is the audience of the service's own token (default: AudienceIdentity alone).
	// Name only the services the token is sent to: a wider audience is a wider blast radius.
	Audience []string
	// NotFoundResource, when set, turns identity's NotFound into apierr.NotFound of that
	// resource for the service's caller (the connection service exchanges for users named by
	// its stored state, who may have been removed since: "user"). Empty makes NotFound an
	// Internal error, the service's own fault (the vault-broker only exchanges its verified
	// caller's token). GetTenantStatus's NotFound is never an error: see TenantStatus.
	NotFoundResource string
	// CallTimeout bounds each call to identity (default 5s).
	CallTimeout time.Duration
	// Now is the clock for renewal decisions; nil means time.Now.
	Now func() time.Time
}

// Client obtains a service's tokens from identity. Safe for concurrent use.
type Client struct {
	tokens   identityv1.TokenServiceClient
	tenants  identityv1.TenantServiceClient
	clientID string
	secret   string
	audience []string
	notFound string
	timeout  time.Duration
	now      func() time.Time

	// mu serializes renewals of cur: concurrent callers at expiry wait for one IssueToken.
	mu  sync.Mutex
	cur serviceToken

	issued, exchanged atomic.Int64
}

type serviceToken struct {
	token     string
	expires   time.Time
	refreshAt time.Time
}

// New checks cfg and returns a Client. It does not call identity yet.
func New(cfg Config) (*Client, error) {
	switch {
	case cfg.Conn == nil:
		return nil, errors.New("identity client: a connection to identity is required")
	case cfg.ClientID == "":
		return nil, errors.New("identity client: the service's client id is required")
	case cfg.ClientSecret == "":
		return nil, errors.New("identity client: the service's client secret is required")
	}
	if len(cfg.Audience) == 0 {
		cfg.Audience = []string{AudienceIdentity}
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Client{
		tokens:   identityv1.NewTokenServiceClient(cfg.Conn),
		tenants:  identityv1.NewTenantServiceClient(cfg.Conn),
		clientID: cfg.ClientID, secret: cfg.ClientSecret,
		audience: append([]string(nil), cfg.Audience...), notFound: cfg.NotFoundResource,
		timeout: cfg.CallTimeout, now: cfg.Now,
	}, nil
}

// Stats counts successful calls to identity, for tests and metrics.
type Stats struct {
	ServiceTokensIssued int64 // IssueToken calls
	TokensExchanged     int64 // ExchangeToken calls
}

// Stats returns the counters.
func (c *Client) Stats() Stats {
	return Stats{ServiceTokensIssued: c.issued.Load(), TokensExchanged: c.exchanged.Load()}
}

// ServiceToken returns the service's own token (a grpcclient.TokenSource), issuing a new one
// when there is none or the current one has passed two thirds of its lifetime. If renewal fails
// while the current token still has time left, the current token is returned and the next call
// tries again.
func (c *Client) ServiceToken(ctx context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if c.cur.token != "" && now.Before(c.cur.refreshAt) {
		return c.cur.token, nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, err := c.tokens.IssueToken(ctx, &identityv1.IssueTokenRequest{
		Credential: &identityv1.IssueTokenRequest_Platform{Platform: &identityv1.PlatformCredential{
			ClientId: c.clientID, ClientSecret: c.secret,
		}},
		Audience: c.audience,
	})
	if err != nil {
		if c.cur.token != "" && now.Add(10*time.Second).Before(c.cur.expires) {
			return c.cur.token, nil // ride out an identity blip on a token that is still good
		}
		return "", c.callError("issue service token", err)
	}
	exp := resp.GetExpireTime().AsTime()
	if resp.GetAccessToken() == "" || !exp.After(now) {
		return "", apierr.Internal(errors.New("identity issued an empty or expired service token"))
	}
	c.cur = serviceToken{token: resp.GetAccessToken(), expires: exp, refreshAt: now.Add(exp.Sub(now) * 2 / 3)}
	c.issued.Add(1)
	return c.cur.token, nil
}

// outgoing returns ctx carrying the service's own token as both the bearer and the service
// token: towards identity the service acts as itself. The request id is passed on.
func (c *Client) outgoing(ctx context.Context) (context.Context, error) {
	tok, err := c.ServiceToken(ctx)
	if err != nil {
		return nil, err
	}
	md := metadata.Pairs(grpcserver.MDAuthorization, "Bearer "+tok, grpcserver.MDServiceToken, tok)
	if id := logging.RequestID(ctx); id != "" {
		md.Set(grpcserver.MDRequestID, id)
	}
	// NewOutgoingContext replaces whatever outgoing metadata ctx had: nothing of the incoming
	// caller leaves with this call except what the request body says.
	return metadata.NewOutgoingContext(ctx, md), nil
}

// Exchange calls ExchangeToken as the service and returns the access token. op names the
// exchange in error causes. Identity refuses a suspended tenant (TENANT_SUSPENDED); an empty
// token is Internal.
func (c *Client) Exchange(ctx context.Context, op string, req *identityv1.ExchangeTokenRequest) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	octx, err := c.outgoing(ctx)
	if err != nil {
		return "", err
	}
	resp, err := c.tokens.ExchangeToken(octx, req)
	if err != nil {
		return "", c.callError(op, err)
	}
	if resp.GetAccessToken() == "" {
		return "", apierr.Internal(fmt.Errorf("identity: %s: empty access token", op))
	}
	c.exchanged.Add(1)
	return resp.GetAccessToken(), nil
}

// TenantState implements authn.TenantStatus with GetTenantStatus. An unknown tenant is
// (StateInactive, nil).
func (c *Client) TenantState(ctx context.Context, tenantID string) (authn.TenantState, error) {
	st, err := c.TenantStatus(ctx, tenantID)
	switch {
	case err != nil:
		return authn.StateInactive, err
	case st == identityv1.TenantStatus_TENANT_STATUS_ACTIVE:
		return authn.StateActive, nil
	case st == identityv1.TenantStatus_TENANT_STATUS_DELETING:
		return authn.StateDeleting, nil
	default:
		return authn.StateInactive, nil
	}
}

// TenantStatus returns identity's status of tenantID; an unknown tenant is
// TENANT_STATUS_UNSPECIFIED with a nil error.
func (c *Client) TenantStatus(ctx context.Context, tenantID string) (identityv1.TenantStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	octx, err := c.outgoing(ctx)
	if err != nil {
		return identityv1.TenantStatus_TENANT_STATUS_UNSPECIFIED, err
	}
	resp, err := c.tenants.GetTenantStatus(octx, &identityv1.GetTenantStatusRequest{TenantId: tenantID})
	if status.Code(err) == codes.NotFound {
		return identityv1.TenantStatus_TENANT_STATUS_UNSPECIFIED, nil
	}
	if err != nil {
		return identityv1.TenantStatus_TENANT_STATUS_UNSPECIFIED, c.callError("tenant status", err)
	}
	return resp.GetStatus(), nil
}

// callError maps identity's answer to what the service's caller should see: identity down →
// Unavailable with retry info; the tenant suspended → TenantSuspended; NotFound → see
// Config.NotFoundResource; anything else (the service's credential refused, a bad request) is
// the service's problem → Internal, logged.
func (c *Client) callError(op string, err error) error {
	cause := fmt.Errorf("identity: %s: %w", op, err)
	switch st := status.Convert(err); {
	case errors.Is(err, context.Canceled):
		return err
	case st.Code() == codes.Unavailable, st.Code() == codes.DeadlineExceeded, st.Code() == codes.ResourceExhausted:
		return apierr.Unavailable("identity", time.Second).WithCause(cause)
	case st.Code() == codes.PermissionDenied && reasonOf(st) == apierr.ReasonTenantSuspended:
		return apierr.TenantSuspended().WithCause(cause)
	case st.Code() == codes.NotFound && c.notFound != "":
		return apierr.NotFound(c.notFound).WithCause(cause)
	}
	return apierr.Internal(cause)
}

// reasonOf returns the ErrorInfo reason of a Bulkhead status, or "".
func reasonOf(st *status.Status) string {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == apierr.Domain {
			return info.GetReason()
		}
	}
	return ""
}
