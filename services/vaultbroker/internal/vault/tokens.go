package vault

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	vaultapi "github.com/hashicorp/vault-client-go"
)

// JWTSource obtains the JWT the broker presents to Vault's JWT auth to act for one tenant: a
// token identity issued with aud "bulkhead.vault" and tid tenantID. In the service it is a
// token exchange of the caller's own token (so the broker can only get tenant T's JWT while
// serving a request for T); tests mint them with a test key.
type JWTSource interface {
	VaultJWT(ctx context.Context, tenantID string) (string, error)
}

// JWTSourceFunc adapts a function to JWTSource.
type JWTSourceFunc func(ctx context.Context, tenantID string) (string, error)

// VaultJWT calls f.
func (f JWTSourceFunc) VaultJWT(ctx context.Context, tenantID string) (string, error) {
	return f(ctx, tenantID)
}

// Stats counts what the tenant token cache did. Tests wait on these instead of sleeping.
type Stats struct {
	Logins          int64 // successful JWT logins
	LoginFailures   int64
	Renewals        int64 // successful renew-self calls (service tokens)
	RenewalFailures int64
	Evictions       int64 // tenants pushed out of the LRU by newer ones
	Invalidations   int64 // tokens dropped after Vault answered 403
	Cached          int   // tenants currently cached
}

// tenantCache holds one vault client and current token per tenant, bounded by an LRU. Its key
// is the tenant id the caller passed, which the gRPC layer takes only from verified claims.
type tenantCache struct {
	cfg *Config
	src JWTSource
	lru *lru.Cache[string, *tenantEntry]

	logins, loginFailures, renewals, renewalFailures, evictions, invalidations atomic.Int64
}

// tenantEntry is one tenant's client. The client's namespace is fixed at creation (namespace
// mode) and it never holds a client-wide token: the token is passed per request from state, so
// a 403 can invalidate exactly the token that failed.
type tenantEntry struct {
	l      layout
	client *vaultapi.Client
	mu     sync.Mutex // serializes login and renewal for this tenant
	state  atomic.Pointer[tokenState]
}

type tokenState struct {
	token     string
	expires   time.Time
	refreshAt time.Time // renew or log in again from here on, before expiry
	renewable bool
}

func newTenantCache(cfg *Config, src JWTSource) (*tenantCache, error) {
	l, err := lru.New[string, *tenantEntry](cfg.CacheSize)
	if err != nil {
		return nil, err
	}
	return &tenantCache{cfg: cfg, src: src, lru: l}, nil
}

func (c *tenantCache) stats() Stats {
	return Stats{
		Logins:          c.logins.Load(),
		LoginFailures:   c.loginFailures.Load(),
		Renewals:        c.renewals.Load(),
		RenewalFailures: c.renewalFailures.Load(),
		Evictions:       c.evictions.Load(),
		Invalidations:   c.invalidations.Load(),
		Cached:          c.lru.Len(),
	}
}

// entry returns tenant's cache entry, creating it (without logging in) if absent.
func (c *tenantCache) entry(tenant string) (*tenantEntry, error) {
	if e, ok := c.lru.Get(tenant); ok {
		return e, nil
	}
	client, err := newAPIClient(c.cfg)
	if err != nil {
		return nil, err
	}
	l := c.cfg.layout(tenant)
	if c.cfg.Mode == ModeNamespace {
		// Set once, client-wide, on a client only this tenant uses: every request it sends
		// carries the tenant's namespace, and nothing can reset it to empty.
		if l.namespace == "" {
			return nil, errors.New("namespace mode without a tenant namespace")
		}
		if err := client.SetNamespace(l.namespace); err != nil {
			return nil, err
		}
	}
	e := &tenantEntry{l: l, client: client}
	prev, found, evicted := c.lru.PeekOrAdd(tenant, e)
	if evicted {
		c.evictions.Add(1)
	}
	if found {
		return prev, nil
	}
	return e, nil
}

func (c *tenantCache) forget(tenant string) { c.lru.Remove(tenant) }

// invalidate drops st if it is still e's current token (another goroutine may already have
// replaced it).
func (c *tenantCache) invalidate(e *tenantEntry, st *tokenState) {
	if e.state.CompareAndSwap(st, nil) {
		c.invalidations.Add(1)
	}
}

// token returns a usable token for e, logging in or renewing when the current one is missing
// or past its refresh point. The fast path is one atomic load.
func (c *tenantCache) token(ctx context.Context, e *tenantEntry) (*tokenState, error) {
	if st := e.state.Load(); st != nil && c.cfg.Now().Before(st.refreshAt) {
		return st, nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	now := c.cfg.Now()
	st := e.state.Load()
	if st != nil && now.Before(st.refreshAt) {
		return st, nil // refreshed while this caller waited for the lock
	}
	if st != nil && st.renewable && now.Before(st.expires) {
		next, err := c.renew(ctx, e, st)
		if err == nil {
			e.state.Store(next)
			return next, nil
		}
		c.cfg.Logger.Debug("vault token renewal failed; logging in again", "tenant", e.l.tenant, "err", err)
	}
	next, err := c.login(ctx, e)
	if err != nil {
		if st != nil && now.Before(st.expires) && errors.Is(err, ErrUnavailable) {
			// Ride out a Vault blip on a token that is still valid; the next request retries.
			return st, nil
		}
		e.state.CompareAndSwap(st, nil)
		return nil, err
	}
	e.state.Store(next)
	return next, nil
}

func (c *tenantCache) newState(token string, lease time.Duration, renewable bool) *tokenState {
	now := c.cfg.Now()
	// Refresh after two thirds of the lease: early enough that a slow Vault does not leave a
	// request holding an expired token, late enough to log in rarely.
	return &tokenState{token: token, expires: now.Add(lease), refreshAt: now.Add(lease * 2 / 3), renewable: renewable}
}

func (c *tenantCache) login(ctx context.Context, e *tenantEntry) (*tokenState, error) {
	st, err := c.doLogin(ctx, e)
	if err != nil {
		c.loginFailures.Add(1)
		return nil, err
	}
	c.logins.Add(1)
	return st, nil
}

func (c *tenantCache) doLogin(ctx context.Context, e *tenantEntry) (*tokenState, error) {
	jwt, err := c.src.VaultJWT(ctx, e.l.tenant)
	if err != nil {
		return nil, fmt.Errorf("vault login for tenant %s: obtain jwt: %w", e.l.tenant, err)
	}
	resp, err := e.client.Write(ctx, e.l.loginPath(), map[string]any{"role": e.l.role, "jwt": jwt})
	if err != nil {
		return nil, loginError(e.l.tenant, err)
	}
	if resp == nil || resp.Auth == nil || resp.Auth.ClientToken == "" {
		return nil, fmt.Errorf("vault login for tenant %s: %w: no token in response", e.l.tenant, ErrLoginDenied)
	}
	// Defence in depth: the token must carry exactly the tenant's policy. A role edited to add
	// policies (or the "default" policy) is refused rather than used.
	if !slices.Equal(resp.Auth.Policies, []string{e.l.policy}) {
		return nil, fmt.Errorf("vault login for tenant %s: %w: token carries policies %v, want exactly [%s]",
			e.l.tenant, ErrPermissionDenied, resp.Auth.Policies, e.l.policy)
	}
	lease := time.Duration(resp.Auth.LeaseDuration) * time.Second
	if lease <= 0 {
		return nil, fmt.Errorf("vault login for tenant %s: token without a TTL refused", e.l.tenant)
	}
	return c.newState(resp.Auth.ClientToken, lease, resp.Auth.Renewable), nil
}

func loginError(tenant string, err error) error {
	op := "vault login for tenant " + tenant
	status, msg := statusOf(err), messageOf(err)
	switch {
	case status == http.StatusBadRequest && strings.Contains(msg, "could not be found"),
		status == http.StatusNotFound:
		// The role (or, in namespace mode, the namespace) does not exist.
		return fmt.Errorf("%s: %w: %w", op, ErrTenantNotProvisioned, err)
	case status == http.StatusBadRequest || status == http.StatusForbidden || status == http.StatusUnauthorized:
		return fmt.Errorf("%s: %w: %w", op, ErrLoginDenied, err)
	}
	return classify(op, err)
}

// renew extends a service token with renew-self. Near the role's max TTL Vault grants less than
// asked; then a fresh login is better than a token about to die.
func (c *tenantCache) renew(ctx context.Context, e *tenantEntry, st *tokenState) (*tokenState, error) {
	resp, err := e.client.Write(ctx, "auth/token/renew-self",
		map[string]any{"increment": int64(c.cfg.TokenTTL / time.Second)}, vaultapi.WithToken(st.token))
	if err != nil {
		c.renewalFailures.Add(1)
		return nil, classify("vault renew-self", err)
	}
	if resp == nil || resp.Auth == nil {
		c.renewalFailures.Add(1)
		return nil, errors.New("vault renew-self: no auth in response")
	}
	lease := time.Duration(resp.Auth.LeaseDuration) * time.Second
	if lease < c.cfg.TokenTTL/2 {
		c.renewalFailures.Add(1)
		return nil, fmt.Errorf("vault renew-self: granted %s, near the max TTL", lease)
	}
	c.renewals.Add(1)
	return c.newState(st.token, lease, resp.Auth.Renewable), nil
}
