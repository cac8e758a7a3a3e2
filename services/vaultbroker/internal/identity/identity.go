// Package identity is the vault-broker's client of the identity service. It holds the
// broker's only standing credential towards identity (its platform client id and secret) and
// turns it into the three things the broker needs:
//
//   - its own service token (sub svc:<client id>, audience bulkhead.identity only), obtained
//     with IssueToken, cached and renewed before it expires;
//   - a vault.JWTSource: the JWT the broker presents to Vault's JWT auth to act for tenant T is
//     obtained by ExchangeToken with the *incoming request's own bearer token* as subject
//     token, so the broker can only get T's Vault identity while serving a caller who really
//     presented a token of T (identity verifies it, kill switch included);
//   - an authn.TenantStatus (the kill switch) backed by GetTenantStatus.
//
// It talks to identity over a plain gRPC connection and sets the credentials itself rather
// than through pkg/grpcclient: grpcclient forwards the incoming principal's token, and towards
// identity the broker must act as itself, never as its caller.
package identity

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
	"github.com/bulkhead/bulkhead/pkg/claims"
	"github.com/bulkhead/bulkhead/pkg/grpcserver"
	"github.com/bulkhead/bulkhead/pkg/logging"
)

// Audiences used by the broker.
const (
	// AudienceIdentity is the only audience of the broker's own service token: it is good for
	// calling identity and nothing else.
	AudienceIdentity = "bulkhead.identity"
	// AudienceVault is the audience Vault's JWT auth requires of a tenant JWT.
	AudienceVault = "bulkhead.vault"
)

// Config configures a Client.
type Config struct {
	// Conn is a connection to identity's gRPC server. The Client does not close it.
	Conn grpc.ClientConnInterface
	// ClientID and ClientSecret are the broker's platform credential on identity.
	ClientID     string
	ClientSecret string
	// VaultAudience is the audience of tenant JWTs (default AudienceVault).
	VaultAudience string
	// CallTimeout bounds each call to identity (default 5s).
	CallTimeout time.Duration
	// Now is the clock for renewal decisions; nil means time.Now.
	Now func() time.Time
}

// Client obtains the broker's tokens from identity. Safe for concurrent use.
type Client struct {
	tokens   identityv1.TokenServiceClient
	tenants  identityv1.TenantServiceClient
	clientID string
	secret   string
	vaultAud string
	timeout  time.Duration
	now      func() time.Time

	// mu serializes renewals of cur: concurrent callers at expiry wait for one IssueToken.
	mu  sync.Mutex
	cur svcToken

	issued, exchanged atomic.Int64
}

type svcToken struct {
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
		return nil, errors.New("identity client: the broker's client id is required")
	case cfg.ClientSecret == "":
		return nil, errors.New("identity client: the broker's client secret is required")
	}
	if cfg.VaultAudience == "" {
		cfg.VaultAudience = AudienceVault
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
		clientID: cfg.ClientID, secret: cfg.ClientSecret, vaultAud: cfg.VaultAudience,
		timeout: cfg.CallTimeout, now: cfg.Now,
	}, nil
}

// Stats counts calls to identity, for tests and metrics.
type Stats struct {
	ServiceTokensIssued int64 // IssueToken calls that succeeded
	VaultJWTsExchanged  int64 // ExchangeToken calls that succeeded
}

// Stats returns the counters.
func (c *Client) Stats() Stats {
	return Stats{ServiceTokensIssued: c.issued.Load(), VaultJWTsExchanged: c.exchanged.Load()}
}

// ServiceToken returns the broker's own token, issuing a new one when there is none or the
// current one has passed two thirds of its lifetime. If renewal fails while the current token
// still has time left, the current token is returned and the next call tries again.
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
		Audience: []string{AudienceIdentity},
	})
	if err != nil {
		if c.cur.token != "" && now.Add(10*time.Second).Before(c.cur.expires) {
			return c.cur.token, nil // ride out an identity blip on a token that is still good
		}
		return "", callError("issue service token", err)
	}
	exp := resp.GetExpireTime().AsTime()
	if resp.GetAccessToken() == "" || !exp.After(now) {
		return "", apierr.Internal(errors.New("identity issued an empty or expired service token"))
	}
	life := exp.Sub(now)
	c.cur = svcToken{token: resp.GetAccessToken(), expires: exp, refreshAt: now.Add(life * 2 / 3)}
	c.issued.Add(1)
	return c.cur.token, nil
}

// outgoing returns ctx carrying the broker's own token as both the bearer and the service
// token: towards identity the broker acts as itself. The request id is passed on.
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

// VaultJWT implements vault.JWTSource. The subject token is the bearer token of the request
// being served (claims in ctx, put there by authentication), and it must belong to tenantID:
// the broker cannot obtain a tenant's Vault identity without a caller of that tenant.
func (c *Client) VaultJWT(ctx context.Context, tenantID string) (string, error) {
	cl, ok := claims.FromContext(ctx)
	switch {
	case !ok || cl.Token == "":
		return "", apierr.Internal(errors.New("vault jwt: no verified caller token in the request context"))
	case cl.TenantID == "" || cl.TenantID != tenantID:
		return "", apierr.Internal(fmt.Errorf("vault jwt: caller's tenant %q is not %q", cl.TenantID, tenantID))
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	octx, err := c.outgoing(ctx)
	if err != nil {
		return "", err
	}
	resp, err := c.tokens.ExchangeToken(octx, &identityv1.ExchangeTokenRequest{
		SubjectToken: cl.Token,
		Audience:     []string{c.vaultAud},
	})
	if err != nil {
		return "", callError("exchange for a vault jwt", err)
	}
	if resp.GetAccessToken() == "" {
		return "", apierr.Internal(errors.New("identity returned an empty vault jwt"))
	}
	c.exchanged.Add(1)
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

// callError maps identity's answer to what the broker's caller should see: identity down →
// Unavailable with retry info; the tenant suspended → TenantSuspended; anything else (the
// broker's credential refused, a bad request) is the broker's problem → Internal, logged.
func callError(op string, err error) error {
	cause := fmt.Errorf("identity: %s: %w", op, err)
	switch st := status.Convert(err); {
	case errors.Is(err, context.Canceled):
		return err
	case st.Code() == codes.Unavailable, st.Code() == codes.DeadlineExceeded, st.Code() == codes.ResourceExhausted:
		return apierr.Unavailable("identity", time.Second).WithCause(cause)
	case st.Code() == codes.PermissionDenied && reasonOf(st) == apierr.ReasonTenantSuspended:
		return apierr.TenantSuspended().WithCause(cause)
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
