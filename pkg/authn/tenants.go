package authn

import (
	"context"
	"errors"
	"fmt"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"
)

// TenantStatus is the kill switch: verification asks it about every token's tenant, so
// suspending a tenant (or deleting it) refuses its tokens everywhere without waiting for them
// to expire.
type TenantStatus interface {
	// TenantActive reports whether tenantID exists and is active. An unknown or deleted tenant
	// is (false, nil), never an error. An error means the answer is unknown; verification then
	// fails closed.
	TenantActive(ctx context.Context, tenantID string) (bool, error)
}

// TenantStatusFunc adapts a function to TenantStatus.
type TenantStatusFunc func(ctx context.Context, tenantID string) (bool, error)

// TenantActive calls f.
func (f TenantStatusFunc) TenantActive(ctx context.Context, tenantID string) (bool, error) {
	return f(ctx, tenantID)
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
	active  bool
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

// TenantActive answers from the cache when the answer is younger than the TTL. Concurrent misses
// for one tenant share a single call to the wrapped source.
func (c *CachedTenantStatus) TenantActive(ctx context.Context, tenantID string) (bool, error) {
	if e, ok := c.lru.Get(tenantID); ok && c.now().Before(e.expires) {
		return e.active, nil
	}
	ch := c.group.DoChan(tenantID, func() (any, error) {
		// The shared call must not die with the first caller's context (the others still wait
		// for it), so it gets its own bound instead.
		ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tenantStatusTimeout)
		defer cancel()
		active, err := c.inner.TenantActive(ictx, tenantID)
		if err != nil {
			return false, err
		}
		c.lru.Add(tenantID, tenantEntry{active: active, expires: c.now().Add(c.ttl)})
		return active, nil
	})
	select {
	case <-ctx.Done():
		return false, fmt.Errorf("authn: tenant status: %w", ctx.Err())
	case r := <-ch:
		if r.Err != nil {
			return false, fmt.Errorf("authn: tenant status: %w", r.Err)
		}
		return r.Val.(bool), nil
	}
}

// Forget drops tenantID's cached answer, so a service that learns of a suspension directly
// (identity itself) applies it at once rather than within the TTL.
func (c *CachedTenantStatus) Forget(tenantID string) { c.lru.Remove(tenantID) }
