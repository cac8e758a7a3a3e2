// Package fairness keeps one tenant's traffic to a provider, or that provider failing for
// that tenant, from affecting other tenants: a token bucket and a circuit breaker per
// (tenant, integration), held in a bounded LRU so memory stays flat however many pairs call.
// An evicted pair comes back with a full bucket and a closed breaker, which is what an idle
// pair's would be anyway.
package fairness

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/sony/gobreaker/v2"
	"golang.org/x/time/rate"
)

// Defaults used when a Config field is zero.
const (
	DefaultRate            = rate.Limit(10) // calls per second per (tenant, integration)
	DefaultBurst           = 20
	DefaultMaxKeys         = 10_000
	DefaultBreakerFailures = 5
	DefaultBreakerOpen     = 30 * time.Second
)

// ErrOpen is returned by Do while the pair's breaker refuses calls; RetryAfter says when to
// try again.
var ErrOpen = errors.New("fairness: circuit open")

// Config sizes the buckets and breakers.
type Config struct {
	Rate  rate.Limit
	Burst int
	// MaxKeys bounds the (tenant, integration) pairs kept.
	MaxKeys int
	// BreakerFailures consecutive failures open a pair's breaker for BreakerOpen; then one
	// trial call decides whether it closes.
	BreakerFailures uint32
	BreakerOpen     time.Duration
	// Now is the rate limiter's clock; nil means time.Now.
	Now func() time.Time
}

// Set holds the per-pair state. Safe for concurrent use.
type Set struct {
	cfg   Config
	mu    sync.Mutex // makes get-or-create atomic
	pairs *lru.Cache[key, *pair]
}

type key struct{ tenant, integration string }

type pair struct {
	limiter *rate.Limiter
	breaker *gobreaker.CircuitBreaker[struct{}]
}

// New builds a Set from cfg.
func New(cfg Config) (*Set, error) {
	if cfg.Rate == 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.Burst == 0 {
		cfg.Burst = DefaultBurst
	}
	if cfg.MaxKeys == 0 {
		cfg.MaxKeys = DefaultMaxKeys
	}
	if cfg.BreakerFailures == 0 {
		cfg.BreakerFailures = DefaultBreakerFailures
	}
	if cfg.BreakerOpen == 0 {
		cfg.BreakerOpen = DefaultBreakerOpen
	}
	if cfg.Rate < 0 || cfg.Burst < 0 || cfg.MaxKeys < 0 || cfg.BreakerOpen < 0 {
		return nil, errors.New("fairness: rate, burst, MaxKeys and BreakerOpen must not be negative")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c, err := lru.New[key, *pair](cfg.MaxKeys)
	if err != nil {
		return nil, fmt.Errorf("fairness: %w", err)
	}
	return &Set{cfg: cfg, pairs: c}, nil
}

func (s *Set) get(tenant, integration string) *pair {
	k := key{tenant, integration}
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.pairs.Get(k); ok {
		return p
	}
	p := &pair{
		limiter: rate.NewLimiter(s.cfg.Rate, s.cfg.Burst),
		breaker: gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
			Name:        tenant + "/" + integration,
			MaxRequests: 1,
			Timeout:     s.cfg.BreakerOpen,
			ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= s.cfg.BreakerFailures },
			// Only what Failure marks counts against the provider: a 4xx is an answer, and a
			// caller giving up says nothing about the provider.
			IsSuccessful: func(err error) bool { return err == nil || !errors.Is(err, errFailure) },
			IsExcluded: func(err error) bool {
				return errors.Is(err, context.Canceled) && !errors.Is(err, errFailure)
			},
		}),
	}
	s.pairs.Add(k, p)
	return p
}

// Allow takes a token from the pair's bucket, or reports how long until one is available.
func (s *Set) Allow(tenant, integration string) (ok bool, retryAfter time.Duration) {
	r := s.get(tenant, integration).limiter.ReserveN(s.cfg.Now(), 1)
	if !r.OK() {
		return false, time.Second
	}
	if d := r.DelayFrom(s.cfg.Now()); d > 0 {
		r.CancelAt(s.cfg.Now())
		return false, d
	}
	return true, 0
}

var errFailure = errors.New("fairness: provider failure")

// failure marks an error as the provider's failure.
type failure struct{ err error }

func (f failure) Error() string   { return f.err.Error() }
func (f failure) Unwrap() []error { return []error{f.err, errFailure} }

// Failure marks err as a failure of the provider (5xx, timeout, unreachable): it counts
// towards opening the pair's breaker. Other errors returned by Do's fn do not.
func Failure(err error) error {
	if err == nil {
		return nil
	}
	return failure{err}
}

// Do runs fn through the pair's breaker. While the breaker is open (or half-open with its
// trial call in flight) fn is not run and the error wraps ErrOpen.
func (s *Set) Do(tenant, integration string, fn func() error) error {
	_, err := s.get(tenant, integration).breaker.Execute(func() (struct{}, error) { return struct{}{}, fn() })
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		return fmt.Errorf("%w: %w", ErrOpen, err)
	}
	return err
}

// RetryAfter is how long an open breaker stays open at most.
func (s *Set) RetryAfter() time.Duration { return s.cfg.BreakerOpen }
