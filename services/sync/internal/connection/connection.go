// Package connection is the sync engine's source of credentials: the connection service's
// GetAccessToken, called with a tenant background token from identity (the sync service acting
// as itself within the tenant). A credential is asked for per run and never stored.
package connection

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	connectionv1 "github.com/bulkhead/bulkhead/gen/bulkhead/connection/v1"
	"github.com/bulkhead/bulkhead/pkg/grpcserver"
	"github.com/bulkhead/bulkhead/services/sync/internal/engine"
)

// Audiences of the tenant token: the connection service's, and the vault-broker's, because the
// connection service forwards its caller's token to the broker to read the credential.
var Audiences = []string{"bulkhead.connection", "bulkhead.vaultbroker"}

// TenantTokens supplies the sync service's token within a tenant (identity.Client).
type TenantTokens interface {
	TenantToken(ctx context.Context, tenantID string, audiences ...string) (string, error)
}

// Config configures Tokens.
type Config struct {
	// Conn is a connection to the connection service; Tokens does not close it.
	Conn grpc.ClientConnInterface
	// Tenants gives tenant background tokens; the service's platform credential on identity
	// needs the scope connections.use for them to be accepted.
	Tenants TenantTokens
	// CallTimeout bounds a call [10s].
	CallTimeout time.Duration
}

// Tokens implements engine.AccessTokens and engine.TokenRefresher.
type Tokens struct {
	conns   connectionv1.ConnectionServiceClient
	tenants TenantTokens
	timeout time.Duration
	// versions remembers the credential version of recently handed-out tokens (by hash), so a
	// refresh after a 401 names the version the provider rejected: a burst of 401s then causes
	// one refresh, not one per worker.
	mu       sync.Mutex
	versions *lru.Cache[[32]byte, int64]
}

var (
	_ engine.AccessTokens   = (*Tokens)(nil)
	_ engine.TokenRefresher = (*Tokens)(nil)
)

// New returns Tokens.
func New(cfg Config) (*Tokens, error) {
	if cfg.Conn == nil || cfg.Tenants == nil {
		return nil, errors.New("connection: Conn and Tenants are required")
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 10 * time.Second
	}
	versions, err := lru.New[[32]byte, int64](10_000)
	if err != nil {
		return nil, err
	}
	return &Tokens{conns: connectionv1.NewConnectionServiceClient(cfg.Conn), tenants: cfg.Tenants, timeout: cfg.CallTimeout, versions: versions}, nil
}

// AccessToken returns the connection's current credential.
func (t *Tokens) AccessToken(ctx context.Context, tenantID, connectionID string) (string, error) {
	return t.get(ctx, &connectionv1.GetAccessTokenRequest{TenantId: tenantID, ConnectionId: connectionID})
}

// RefreshAccessToken returns a credential newer than rejected (the provider answered 401).
func (t *Tokens) RefreshAccessToken(ctx context.Context, tenantID, connectionID, rejected string) (string, error) {
	req := &connectionv1.GetAccessTokenRequest{TenantId: tenantID, ConnectionId: connectionID, ForceRefresh: true}
	t.mu.Lock()
	if v, ok := t.versions.Get(sha256.Sum256([]byte(rejected))); ok {
		req.RejectedCredentialVersion = v
	}
	t.mu.Unlock()
	return t.get(ctx, req)
}

func (t *Tokens) get(ctx context.Context, req *connectionv1.GetAccessTokenRequest) (string, error) {
	bearer, err := t.tenants.TenantToken(ctx, req.GetTenantId(), Audiences...)
	if err != nil {
		return "", fmt.Errorf("connection: %w", err)
	}
	// Only this service's tenant token leaves: nothing of any incoming call's metadata.
	ctx = metadata.NewOutgoingContext(ctx, metadata.Pairs(grpcserver.MDAuthorization, "Bearer "+bearer))
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	resp, err := t.conns.GetAccessToken(ctx, req)
	if err != nil {
		switch status.Code(err) {
		case codes.NotFound, codes.FailedPrecondition, codes.PermissionDenied:
			// Revoked, disabled, needing re-authorization, or gone: retrying will not help.
			return "", fmt.Errorf("%w: %w", engine.ErrCredentialUnusable, err)
		}
		return "", fmt.Errorf("connection: get access token: %w", err)
	}
	t.mu.Lock()
	t.versions.Add(sha256.Sum256([]byte(resp.GetAccessToken())), resp.GetCredentialVersion())
	t.mu.Unlock()
	return resp.GetAccessToken(), nil
}
