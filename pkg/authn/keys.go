package authn

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/lestrrat-go/httprc/v3"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"golang.org/x/time/rate"
)

// KeySource supplies the public keys tokens are verified with.
type KeySource interface {
	// KeySet returns the current public keys. The set is shared: never modify it.
	KeySet(ctx context.Context) (jwk.Set, error)
	// Refresh asks the source to look for new keys, because a token named a kid it does not
	// hold (identity rotated its key). A source may decline (ErrRefreshLimited) so that a
	// flood of tokens with invented kids cannot turn into a flood of requests to identity.
	Refresh(ctx context.Context) error
}

// ErrRefreshLimited is returned by Refresh when the last refresh was too recent.
var ErrRefreshLimited = errors.New("authn: key refresh rate-limited")

// KeyFunc is a KeySource for identity itself, which verifies its own tokens from its key ring:
// the func returns the current public set, so there is nothing to refresh.
type KeyFunc func(ctx context.Context) (jwk.Set, error)

// KeySet calls f.
func (f KeyFunc) KeySet(ctx context.Context) (jwk.Set, error) { return f(ctx) }

// Refresh does nothing: f always returns the current keys.
func (f KeyFunc) Refresh(context.Context) error { return nil }

// RemoteKeysConfig configures RemoteKeys.
type RemoteKeysConfig struct {
	// URL of identity's JWKS, e.g. "http://127.0.0.1:8081/.well-known/jwks.json".
	URL string
	// HTTPClient fetches it; nil means a client with a 5s timeout.
	HTTPClient *http.Client
	// RefreshInterval is how often the keys are fetched in the background even when nothing
	// asks for it (default 10m), so a retired key stops being accepted.
	RefreshInterval time.Duration
	// MinRefreshInterval is the least time between two on-demand refreshes (default 30s). With
	// a burst of 1, at most one fetch per interval is caused by unknown kids, however many
	// tokens carry them.
	MinRefreshInterval time.Duration
	// StartupWait is how long NewRemoteKeys waits for the first fetch (default 5s). When identity
	// is not up by then the service starts anyway and keys are fetched on demand; negative
	// means do not wait.
	StartupWait time.Duration
	// Now is the clock of the on-demand limiter; nil means time.Now.
	Now func() time.Time
}

// RemoteKeys is a KeySource that fetches identity's JWKS over HTTP through a jwk.Cache. The
// first fetch happens while NewRemoteKeys waits (StartupWait); if identity is still coming up
// the service starts anyway, and until a fetch succeeds KeySet fetches on demand (at most once
// a second) and reports an error when that fails too.
type RemoteKeys struct {
	url       string
	client    *http.Client
	cache     *jwk.Cache
	stop      context.CancelFunc // ends the cache's background workers
	kidLimit  *rate.Limiter      // on-demand refreshes caused by unknown kids
	bootLimit *rate.Limiter      // fetches while no key set has ever been fetched
	now       func() time.Time
	mu        sync.Mutex // serializes on-demand fetches so concurrent misses share one
	last      time.Time  // when the last on-demand fetch completed
}

// NewRemoteKeys starts the cache's background workers; Close stops them. ctx bounds only the
// first fetch: the workers live until Close, not until ctx ends — services pass a start-up
// context here, and a refresh loop tied to it would silently stop once start-up is over.
func NewRemoteKeys(ctx context.Context, cfg RemoteKeysConfig) (*RemoteKeys, error) {
	if cfg.URL == "" {
		return nil, errors.New("authn: RemoteKeysConfig.URL is required")
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 5 * time.Second}
	}
	if cfg.RefreshInterval <= 0 {
		cfg.RefreshInterval = 10 * time.Minute
	}
	if cfg.MinRefreshInterval <= 0 {
		cfg.MinRefreshInterval = 30 * time.Second
	}
	if cfg.StartupWait == 0 {
		cfg.StartupWait = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	// The whitelist admits only the configured URL: the cache never follows a URL taken from a
	// token (no `jku`), and this keeps it that way even if someone adds a Register call.
	wl := httprc.NewMapWhitelist().Add(cfg.URL)
	life, stop := context.WithCancel(context.WithoutCancel(ctx))
	cache, err := jwk.NewCache(life, httprc.NewClient(httprc.WithWhitelist(wl), httprc.WithHTTPClient(cfg.HTTPClient)))
	if err != nil {
		stop()
		return nil, fmt.Errorf("authn: start JWKS cache: %w", err)
	}
	// Waiting for the first fetch here (rather than letting it race the first request's
	// on-demand fetch) keeps startup to one request to identity.
	wctx, cancel := ctx, context.CancelFunc(func() {})
	if cfg.StartupWait > 0 {
		wctx, cancel = context.WithTimeout(ctx, cfg.StartupWait)
	}
	err = cache.Register(wctx, cfg.URL,
		jwk.WithHTTPClient(cfg.HTTPClient),
		jwk.WithConstantInterval(cfg.RefreshInterval),
		jwk.WithWaitReady(cfg.StartupWait > 0),
	)
	cancel()
	if err != nil && !(errors.Is(err, context.DeadlineExceeded) && cache.IsRegistered(ctx, cfg.URL)) {
		_ = cache.Shutdown(context.WithoutCancel(ctx))
		stop()
		return nil, fmt.Errorf("authn: register JWKS %s: %w", cfg.URL, err)
	}
	return &RemoteKeys{
		url:       cfg.URL,
		client:    cfg.HTTPClient,
		cache:     cache,
		stop:      stop,
		kidLimit:  rate.NewLimiter(rate.Every(cfg.MinRefreshInterval), 1),
		bootLimit: rate.NewLimiter(rate.Every(time.Second), 1),
		now:       cfg.Now,
	}, nil
}

// KeySet returns the cached keys. While no fetch has ever succeeded (identity still starting)
// it fetches now, at most once a second across all callers; this does not use up the budget
// for unknown kids.
func (r *RemoteKeys) KeySet(ctx context.Context) (jwk.Set, error) {
	if set, err := r.cache.Lookup(ctx, r.url); err == nil {
		return set, nil
	}
	if err := r.fetch(ctx, r.bootLimit); err != nil {
		return nil, fmt.Errorf("authn: JWKS %s not available: %w", r.url, err)
	}
	set, err := r.cache.Lookup(ctx, r.url)
	if err != nil {
		return nil, fmt.Errorf("authn: JWKS %s: %w", r.url, err)
	}
	return set, nil
}

// Refresh fetches the JWKS now unless an unknown kid caused a fetch within MinRefreshInterval,
// in which case it returns ErrRefreshLimited without any network traffic. Concurrent callers
// wait for one fetch and then return nil if it happened while they waited.
func (r *RemoteKeys) Refresh(ctx context.Context) error {
	return r.fetch(ctx, r.kidLimit)
}

func (r *RemoteKeys) fetch(ctx context.Context, limit *rate.Limiter) error {
	asked := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.last.IsZero() && r.last.After(asked) {
		return nil // someone fetched after we asked: their keys are as new as ours would be
	}
	if !limit.AllowN(r.now(), 1) {
		return ErrRefreshLimited
	}
	_, err := r.cache.Refresh(ctx, r.url)
	r.last = r.now()
	if err != nil {
		return fmt.Errorf("authn: refresh JWKS %s: %w", r.url, err)
	}
	return nil
}

// Close stops the background refresh and drops idle connections to identity.
func (r *RemoteKeys) Close(ctx context.Context) error {
	err := r.cache.Shutdown(ctx)
	r.stop()
	r.client.CloseIdleConnections()
	return err
}
