package app

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/pkg/claims"
	"github.com/bulkhead/bulkhead/services/connection/internal/broker"
	"github.com/bulkhead/bulkhead/services/connection/internal/catalog"
	"github.com/bulkhead/bulkhead/services/connection/internal/store"
)

// refreshTimeout bounds one shared refresh (lock wait, broker, provider): callers that give up
// earlier do not cancel it for the others waiting on the same refresh.
const refreshTimeout = 30 * time.Second

// AccessToken is what GetAccessToken hands out.
type AccessToken struct {
	// Token is the OAuth2 access token, the API key or the basic-auth password.
	Token     string
	TokenType string
	// Username is set for basic auth.
	Username string
	// ExpiresAt is zero for credentials without expiry.
	ExpiresAt         time.Time
	AuthType          store.AuthType
	Fields            map[string]string
	CredentialVersion int64
}

// TokenRequest asks GetAccessToken for a connection's credential.
type TokenRequest struct {
	ConnectionID string
	// ForceRefresh refreshes even when the token is not near expiry.
	ForceRefresh bool
	// RejectedVersion, with ForceRefresh, is the credential version the provider refused: a
	// newer one is returned without another refresh.
	RejectedVersion int64
}

// GetAccessToken returns a usable credential for a connection the caller may use.
//
// The fast path is one row read and one broker read. When the token is within the refresh
// margin of its expiry (or a credential without expiry is due for its periodic test, or the
// caller forces a refresh), the work happens once however many callers ask at once: callers
// in this process share one flight (singleflight), and flights of every process serialize on
// the connection's row lock (SELECT … FOR UPDATE). Under the lock the row and the credential
// are read again: if another flight has refreshed meanwhile, its token is returned and the
// provider is not asked again. The broker's check-and-set (expected version) makes a write
// based on a stale read fail rather than overwrite a newer credential.
func (a *App) GetAccessToken(ctx context.Context, req TokenRequest) (AccessToken, error) {
	c, err := caller(ctx)
	if err != nil {
		return AccessToken{}, err
	}
	// A user's token is a front-end credential: raw provider tokens go to Bulkhead services
	// acting for the user (the service token header), never straight to a browser.
	if c.Kind == claims.KindUser && c.Caller == "" {
		return AccessToken{}, apierr.PermissionDenied("a user's token is accepted here only through a Bulkhead service")
	}
	t, _, err := a.credentialFor(ctx, c, req)
	return t, err
}

// credentialFor is GetAccessToken's work for the verified caller c, shared by every path that
// uses a credential (GetAccessToken, Proxy): the connection is read with the use view
// (useActor), so a user-level connection exists only for its owner. It also returns the
// connection row as read before any refresh.
func (a *App) credentialFor(ctx context.Context, c *claims.Claims, req TokenRequest) (AccessToken, store.Connection, error) {
	actor := useActor(c)
	conn, err := a.store.GetConnection(ctx, actor, req.ConnectionID)
	if err != nil {
		return AccessToken{}, store.Connection{}, storeError(err, "connection")
	}
	if err := usable(conn); err != nil {
		return AccessToken{}, store.Connection{}, err
	}
	if !a.needsWork(conn, a.now(), req) {
		cred, err := a.creds.Get(ctx, conn.TenantID, conn.ID, 0)
		switch {
		case err == nil && cred.Version == conn.CredentialVersion:
			return accessToken(conn, cred.Data, cred.Version), conn, nil
		case err != nil && !errors.Is(err, broker.ErrNotFound):
			return AccessToken{}, store.Connection{}, err
		}
		// The broker holds a version the row does not describe (or none): settle it under
		// the lock.
	}
	t, err := a.sharedRefresh(ctx, actor, conn, req)
	return t, conn, err
}

// needsWork reports whether conn's credential must be refreshed or tested before use.
func (a *App) needsWork(conn store.Connection, now time.Time, req TokenRequest) bool {
	if req.ForceRefresh && (req.RejectedVersion == 0 || req.RejectedVersion >= conn.CredentialVersion) {
		return true
	}
	if !conn.AccessExpiresAt.IsZero() && !now.Add(a.margin).Before(conn.AccessExpiresAt) {
		return true
	}
	return !conn.NextCheckAt.IsZero() && !now.Before(conn.NextCheckAt)
}

// sharedRefresh runs refreshLocked once per connection and request shape in this process;
// every caller waits for the shared result or for its own context.
func (a *App) sharedRefresh(ctx context.Context, actor store.Actor, observed store.Connection, req TokenRequest) (AccessToken, error) {
	key := fmt.Sprintf("%s/%s/%t/%d", observed.TenantID, observed.ID, req.ForceRefresh, req.RejectedVersion)
	ch := a.refreshes.DoChan(key, func() (any, error) {
		// Detached from the first caller's cancellation (values — the verified claims the
		// broker calls act with — are kept), bounded on its own.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), refreshTimeout)
		defer cancel()
		return a.refreshLocked(fctx, actor, observed, req)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return AccessToken{}, r.Err
		}
		return r.Val.(AccessToken), nil
	case <-ctx.Done():
		return AccessToken{}, ctx.Err()
	}
}

// refreshLocked does the work under the connection's row lock. Outcomes the caller must see
// as errors after they are recorded (needs_reauth) are returned only after the commit.
func (a *App) refreshLocked(ctx context.Context, actor store.Actor, observed store.Connection, req TokenRequest) (AccessToken, error) {
	var out AccessToken
	var after error // returned once the transaction has committed
	err := a.store.WithLockedConnection(ctx, actor, observed.ID, func(ctx context.Context, l store.Locked) error {
		conn := l.Connection()
		if err := usable(conn); err != nil {
			after = err
			return nil
		}
		now := a.now()
		cred, err := a.creds.Get(ctx, conn.TenantID, conn.ID, 0)
		if errors.Is(err, broker.ErrNotFound) {
			if _, err := l.RecordFailure(ctx, store.Failure{At: now, Reason: "credential missing", NeedsReauth: true}); err != nil {
				return err
			}
			after = apierr.FailedPrecondition(ReasonNeedsReauth, "the connection's credential is missing: authorize it again")
			return nil
		}
		if err != nil {
			return err
		}
		if cred.Version != conn.CredentialVersion {
			// A credential write reached the broker but its row update was lost (a crash
			// between the two): the broker's latest version is the truth.
			if conn, err = l.RecordRefresh(ctx, credentialUpdate(cred.Version, cred.Data, conn.NextCheckAt, now)); err != nil {
				return err
			}
		}
		stale := observed.CredentialVersion
		if req.ForceRefresh && req.RejectedVersion > 0 {
			stale = req.RejectedVersion
		}
		// Someone refreshed while this caller waited: theirs is fresh, even if (for tokens
		// living shorter than the margin) it is already within the margin again.
		if conn.CredentialVersion > stale && (conn.AccessExpiresAt.IsZero() || now.Before(conn.AccessExpiresAt)) {
			out = accessToken(conn, cred.Data, cred.Version)
			return nil
		}
		if !a.needsWork(conn, now, req) {
			out = accessToken(conn, cred.Data, cred.Version)
			return nil
		}
		out, after, err = a.renew(ctx, l, conn, cred, now)
		return err
	})
	if err != nil {
		return AccessToken{}, storeError(err, "connection")
	}
	return out, after
}

// credentialUpdate describes a stored credential map as a row update.
func credentialUpdate(version int64, data map[string]string, nextCheck, now time.Time) store.CredentialUpdate {
	return store.CredentialUpdate{
		CredentialVersion: version,
		AccessExpiresAt:   parseExpiry(data, credExpiry),
		RefreshExpiresAt:  parseExpiry(data, credRefreshExpiry),
		NextCheckAt:       nextCheck,
		At:                now,
	}
}

// renew refreshes (OAuth2) or tests (API key, basic, OAuth2 without a refresh token) conn's
// credential and records the outcome through l.
func (a *App) renew(ctx context.Context, l store.Locked, conn store.Connection, cred broker.Credential, now time.Time) (AccessToken, error, error) {
	p, ok := a.catalog.Get(conn.Integration)
	if !ok {
		return AccessToken{}, nil, fmt.Errorf("app: integration %q left the catalog", conn.Integration)
	}
	e, err := p.Resolve(conn.Fields)
	if err != nil {
		return AccessToken{}, nil, fmt.Errorf("app: resolve %s: %w", p.Key, err)
	}
	var newData map[string]string
	var renewErr error
	switch {
	case conn.AuthType == store.AuthClientCredentials:
		newData, renewErr = a.clientCredentialsToken(ctx, p, e, cred.Data, now)
	case conn.AuthType == store.AuthOAuth2 && cred.Data[credRefreshToken] != "":
		newData, renewErr = a.refreshToken(ctx, p, e, conn.TenantID, cred.Data, now)
	default:
		// Nothing to refresh with: test the credential instead. Without a test endpoint the
		// only check left is the expiry itself.
		switch {
		case e.TestURL != "":
			renewErr = a.testCredential(ctx, p, e, cred.Data)
		case !conn.AccessExpiresAt.IsZero() && !now.Before(conn.AccessExpiresAt):
			renewErr = &providerError{reason: "access token expired and there is no refresh token", rejected: true}
		}
	}
	if renewErr != nil {
		return a.recordFailure(ctx, l, conn, cred, renewErr, now)
	}
	if newData == nil { // tested, unchanged
		next := time.Time{}
		if conn.AccessExpiresAt.IsZero() {
			next = now.Add(a.checkEvery)
		}
		c, err := l.RecordRefresh(ctx, credentialUpdate(cred.Version, cred.Data, next, now))
		if err != nil {
			return AccessToken{}, nil, err
		}
		return accessToken(c, cred.Data, cred.Version), nil, nil
	}
	version, err := a.creds.Put(ctx, conn.TenantID, conn.ID, newData, cred.Version)
	if err != nil {
		// The provider may already have retired the old refresh token; say so loudly.
		a.log.ErrorContext(ctx, "refreshed credential could not be stored", "connection_id", conn.ID,
			"integration", conn.Integration, "error", err.Error())
		if errors.Is(err, broker.ErrConflict) {
			return AccessToken{}, nil, apierr.Aborted("the credential changed during the refresh: retry")
		}
		return AccessToken{}, nil, err
	}
	next := time.Time{}
	if parseExpiry(newData, credExpiry).IsZero() {
		next = now.Add(a.checkEvery)
	}
	u := credentialUpdate(version, newData, next, now)
	u.GrantedScopes = grantedScopes(p, newData, nil)
	c, err := l.RecordRefresh(ctx, u)
	if err != nil {
		return AccessToken{}, nil, err
	}
	return accessToken(c, newData, version), nil, nil
}

// recordFailure records a failed refresh or test. A rejected credential moves the connection
// to needs_reauth; a transient failure keeps it active and, while the current token is still
// valid, hands that one out.
func (a *App) recordFailure(ctx context.Context, l store.Locked, conn store.Connection, cred broker.Credential, renewErr error, now time.Time) (AccessToken, error, error) {
	if errors.Is(renewErr, context.Canceled) || errors.Is(renewErr, context.DeadlineExceeded) {
		return AccessToken{}, nil, renewErr
	}
	rejected := errors.Is(renewErr, errRejected)
	f := store.Failure{At: now, Reason: renewErr.Error(), NeedsReauth: rejected}
	if !rejected && !conn.NextCheckAt.IsZero() {
		f.NextCheckAt = now.Add(time.Minute) // test again soon, not in a day
	}
	c, err := l.RecordFailure(ctx, f)
	if err != nil {
		return AccessToken{}, nil, err
	}
	if apierr.Is(renewErr, ReasonEgressRefused) {
		// Not the credential's fault, but no token comes from an endpoint the guard refuses.
		return AccessToken{}, renewErr, nil
	}
	if rejected {
		return AccessToken{}, apierr.FailedPrecondition(ReasonNeedsReauth, "the provider rejected the connection's credential: authorize it again").WithCause(renewErr), nil
	}
	if c.AccessExpiresAt.IsZero() || now.Before(c.AccessExpiresAt) {
		return accessToken(c, cred.Data, cred.Version), nil, nil
	}
	return AccessToken{}, unavailable(renewErr), nil
}

// refreshToken runs the refresh-token grant with the integration's current OAuth app.
func (a *App) refreshToken(ctx context.Context, p *catalog.Provider, e catalog.Endpoints, tenantID string, prev map[string]string, now time.Time) (map[string]string, error) {
	app, err := a.oauthApp(ctx, tenantID, p.Key)
	if err != nil {
		return nil, err
	}
	cfg := a.oauthConfig(p, e, app, nil)
	tok, err := cfg.TokenSource(a.httpContext(ctx, e), &oauth2.Token{RefreshToken: prev[credRefreshToken]}).Token()
	if err != nil {
		return nil, classifyTokenError(err)
	}
	data, _, _ := tokenData(p, tok, prev, app.ClientID, now)
	return data, nil
}

// clientCredentialsToken runs the client-credentials grant with the connection's own client.
func (a *App) clientCredentialsToken(ctx context.Context, p *catalog.Provider, e catalog.Endpoints, prev map[string]string, now time.Time) (map[string]string, error) {
	cfg := clientcredentials.Config{
		ClientID: prev[credClientID], ClientSecret: prev[credClientSecret], TokenURL: e.TokenURL,
		Scopes: p.OAuth2.DefaultScopes, AuthStyle: a.oauthConfig(p, e, OAuthClient{}, nil).Endpoint.AuthStyle,
	}
	tok, err := cfg.Token(a.httpContext(ctx, e))
	if err != nil {
		return nil, classifyTokenError(err)
	}
	data, _, _ := tokenData(p, tok, nil, "", now)
	data[credClientID], data[credClientSecret] = prev[credClientID], prev[credClientSecret]
	delete(data, credRefreshToken)
	return data, nil
}

// accessToken builds the answer from a credential map.
func accessToken(conn store.Connection, data map[string]string, version int64) AccessToken {
	t := AccessToken{AuthType: conn.AuthType, Fields: maps.Clone(conn.Fields), CredentialVersion: version}
	switch conn.AuthType {
	case store.AuthAPIKey:
		t.Token, t.TokenType = data[credAPIKey], "api_key"
	case store.AuthBasic:
		t.Token, t.Username, t.TokenType = data[credPassword], data[credUsername], "basic"
	default:
		t.Token, t.TokenType, t.ExpiresAt = data[credAccessToken], data[credTokenType], parseExpiry(data, credExpiry)
		if t.TokenType == "" {
			t.TokenType = "Bearer"
		}
	}
	return t
}
