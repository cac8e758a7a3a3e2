// Package ratelimit holds per-tenant token buckets so that one tenant's burst cannot starve the
// others on shared infrastructure. Buckets live in a bounded LRU: memory stays flat however many
// tenants call, and an idle tenant's bucket is simply dropped (it comes back full, which is what
// an idle tenant's bucket would be anyway).
package ratelimit

import (
	"errors"
	"fmt"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"
)

// Defaults used when a Config field is zero.
const (
	DefaultRate    = rate.Limit(50) // requests per second per tenant
	DefaultBurst   = 100
	DefaultMaxKeys = 10_000
)

// Config sets the bucket sizes. Zero fields take the defaults above.
type Config struct {
	// Rate and Burst size each tenant's bucket.
	Rate  rate.Limit
	Burst int
	// NoTenantRate and NoTenantBurst size the buckets of calls that act on no tenant (operators,
	// services acting as themselves, public methods such as sign-in); they default to Rate and
	// Burst. These buckets are kept apart from tenants' so that no caller can drain a tenant's
	// budget by naming it, and no tenant can exhaust the platform's own traffic.
	NoTenantRate  rate.Limit
	NoTenantBurst int
	// MaxKeys bounds each LRU (tenants, and no-tenant keys separately).
	MaxKeys int
	// Now is the clock; nil means time.Now. Tests inject one so refills are deterministic.
	Now func() time.Time
}

// Limiter decides whether a call may proceed. It is safe for concurrent use.
type Limiter struct {
	tenants, others *buckets
	now             func() time.Time
}

type buckets struct {
	lru   *lru.Cache[string, *rate.Limiter]
	rate  rate.Limit
	burst int
}

// New builds a Limiter from cfg.
func New(cfg Config) (*Limiter, error) {
	if cfg.Rate == 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.Burst == 0 {
		cfg.Burst = DefaultBurst
	}
	if cfg.NoTenantRate == 0 {
		cfg.NoTenantRate = cfg.Rate
	}
	if cfg.NoTenantBurst == 0 {
		cfg.NoTenantBurst = cfg.Burst
	}
	if cfg.MaxKeys == 0 {
		cfg.MaxKeys = DefaultMaxKeys
	}
	if cfg.Rate < 0 || cfg.NoTenantRate < 0 || cfg.Burst < 0 || cfg.NoTenantBurst < 0 || cfg.MaxKeys < 0 {
		return nil, errors.New("ratelimit: rates, bursts and MaxKeys must not be negative")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	tenants, err := newBuckets(cfg.MaxKeys, cfg.Rate, cfg.Burst)
	if err != nil {
		return nil, err
	}
	others, err := newBuckets(cfg.MaxKeys, cfg.NoTenantRate, cfg.NoTenantBurst)
	if err != nil {
		return nil, err
	}
	return &Limiter{tenants: tenants, others: others, now: cfg.Now}, nil
}

func newBuckets(size int, r rate.Limit, burst int) (*buckets, error) {
	c, err := lru.New[string, *rate.Limiter](size)
	if err != nil {
		return nil, fmt.Errorf("ratelimit: %w", err)
	}
	return &buckets{lru: c, rate: r, burst: burst}, nil
}

// Allow takes one token from tenantID's bucket. When the bucket is empty it reports false and how
// long until a token is available, which the server returns to the client as RetryInfo.
func (l *Limiter) Allow(tenantID string) (ok bool, retryAfter time.Duration) {
	return l.tenants.allow(tenantID, l.now())
}

// AllowNoTenant is Allow for calls that act on no tenant. key names the caller: the principal's
// subject ("svc:connection", "op:alice") when authenticated, else the peer's IP address
// ("peer:127.0.0.1") for public methods. Its buckets are separate from the tenants'.
func (l *Limiter) AllowNoTenant(key string) (ok bool, retryAfter time.Duration) {
	return l.others.allow(key, l.now())
}

func (b *buckets) allow(key string, now time.Time) (bool, time.Duration) {
	lim, found := b.lru.Get(key)
	if !found {
		// PeekOrAdd keeps the first limiter when two calls race to create one, so neither
		// call gets a private, full bucket.
		fresh := rate.NewLimiter(b.rate, b.burst)
		prev, exists, _ := b.lru.PeekOrAdd(key, fresh)
		lim = fresh
		if exists {
			lim = prev
		}
	}
	r := lim.ReserveN(now, 1)
	if !r.OK() {
		// Burst 0: nothing is ever allowed; tell the client to back off a second.
		return false, time.Second
	}
	if d := r.DelayFrom(now); d > 0 {
		// Give the token back: a refused call must not push the next caller's wait further out.
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}
