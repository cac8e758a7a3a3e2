package authn

import (
	"context"
	"errors"
	"fmt"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"

	"github.com/bulkhead/bulkhead/pkg/authz"
	"github.com/bulkhead/bulkhead/pkg/claims"
)

// TenantState is what token verification needs to know of a token's tenant.
type TenantState int

const (
	// StateInactive: unknown, suspended or deleted. Every token of the tenant is refused.
	StateInactive TenantState = iota
	// StateActive: the tenant's tokens are accepted.
	StateActive
	// StateDeleting: the tenant is being offboarded. Its own principals are refused as for a
	// suspension; only a Bulkhead service's token carrying tenants.offboard is accepted, so
	// the services can finish revoking the tenant's connections.
	StateDeleting
)

// TenantStatus is the kill switch: verification asks it about every token's tenant, so
// suspending a tenant (or deleting it) refuses its tokens everywhere without waiting for them
// to expire.
type TenantStatus interface {
	// TenantState reports tenantID's state. An unknown or deleted tenant is
	// (StateInactive, nil), never an error. An error means the answer is unknown;
	// verification then fails closed.
	TenantState(ctx context.Context, tenantID string) (TenantState, error)
}

// TenantStatusFunc adapts an "is it active" function to TenantStatus (it never answers
// StateDeleting).
type TenantStatusFunc func(ctx context.Context, tenantID string) (bool, error)

// TenantState calls f.
func (f TenantStatusFunc) TenantState(ctx context.Context, tenantID string) (TenantState, error) {
	active, err := f(ctx, tenantID)
	if err != nil || !active {
		return StateInactive, err
	}
	return StateActive, nil
}

// TenantStateFunc adapts a function to TenantStatus.
type TenantStateFunc func(ctx context.Context, tenantID string) (TenantState, error)

// TenantState calls f.
func (f TenantStateFunc) TenantState(ctx context.Context, tenantID string) (TenantState, error) {
	return f(ctx, tenantID)
}

// Accepts reports whether a token with claims c may act for a tenant in state s.
func (s TenantState) Accepts(c *claims.Claims) bool {
	switch s {
	case StateActive:
		return true
	case StateDeleting:
		return c.Kind == claims.KindService && c.HasScope(string(authz.TenantsOffboard))
	default:
		return false
	}
}

// DefaultTenantStatusTTL is how long an answer is reused. It bounds how stale the kill switch
// can be: within seconds of a suspension every service refuses the tenant's tokens, including
// tokens it had already verified and cached.
const DefaultTenantStatusTTL = 2 * time.Second

// tenantStatusTimeout bounds one call to the wrapped source.
const tenantStatusTimeout = 5 * time.Second

// CachedTenantStatus wraps a TenantStatus (typically a gRPC call to identity) in a short TTL
// cache so that checking the kill switch on every call costs a map lookup, not a network hop.
type CachedTenantStatus struct {
	inner TenantStatus
	ttl   time.Duration
	now   func() time.Time
	lru   *lru.Cache[string, tenantEntry]
	group singleflight.Group
}

type tenantEntry struct {
	state   TenantState
	expires time.Time
}

// CachedTenantStatusConfig configures NewCachedTenantStatus.
type CachedTenantStatusConfig struct {
	TTL  time.Duration    // default DefaultTenantStatusTTL
	Size int              // tenants remembered, default 10,000
	Now  func() time.Time // default time.Now
}

// NewCachedTenantStatus wraps inner. Errors are not cached: the next call asks again.
func NewCachedTenantStatus(inner TenantStatus, cfg CachedTenantStatusConfig) (*CachedTenantStatus, error) {
	if inner == nil {
		return nil, errors.New("authn: tenant status source is required")
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTenantStatusTTL
	}
	if cfg.Size <= 0 {
		cfg.Size = 10_000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c, err := lru.New[string, tenantEntry](cfg.Size)
	if err != nil {
		return nil, fmt.Errorf("authn: %w", err)
	}
	return &CachedTenantStatus{inner: inner, ttl: cfg.TTL, now: cfg.Now, lru: c}, nil
}

// TenantState answers from the cache when the answer is younger than the TTL. Concurrent misses
// for one tenant share a single call to the wrapped source.
func (c *CachedTenantStatus) TenantState(ctx context.Context, tenantID string) (TenantState, error) {
	if e, ok := c.lru.Get(tenantID); ok && c.now().Before(e.expires) {
		return e.state, nil
	}
	ch := c.group.DoChan(tenantID, func() (any, error) {
		// The shared call must not die with the first caller's context (the others still wait
		// for it), so it gets its own bound instead.
		ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tenantStatusTimeout)
		defer cancel()
		state, err := c.inner.TenantState(ictx, tenantID)
		if err != nil {
			return StateInactive, err
		}
		c.lru.Add(tenantID, tenantEntry{state: state, expires: c.now().Add(c.ttl)})
		return state, nil
	})
	select {
	case <-ctx.Done():
		return StateInactive, fmt.Errorf("authn: tenant status: %w", ctx.Err())
	case r := <-ch:
		if r.Err != nil {
			return StateInactive, fmt.Errorf("authn: tenant status: %w", r.Err)
		}
		return r.Val.(TenantState), nil
	}
}

// Forget drops tenantID's cached answer, so a service that learns of a suspension directly
// (identity itself) applies it at once rather than within the TTL.
func (c *CachedTenantStatus) Forget(tenantID string) { c.lru.Remove(tenantID) }
