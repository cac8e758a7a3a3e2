// Package fetch calls providers for the sync engine: one page per call, through a token bucket
// per (tenant, provider) that also obeys the provider's Retry-After and rate-limit headers, and
// a circuit breaker per (tenant, provider), so one tenant's failing or throttled provider never
// slows another tenant — nor the same provider for another tenant.
package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/sony/gobreaker/v2"
	"golang.org/x/time/rate"

	"github.com/bulkhead/bulkhead/services/sync/internal/definition"
)

// Config configures a Client. Zero values take the defaults in brackets.
type Config struct {
	// HTTPClient makes the requests [a client with Timeout 30s that does not follow redirects:
	// a redirect could carry the credential to another host].
	HTTPClient *http.Client
	// Rate and Burst are each (tenant, provider) bucket's steady rate and burst [5/s, 10].
	Rate  rate.Limit
	Burst int
	// MaxInlineWait is the longest Retry-After (or rate-limit reset) waited for inside a call
	// [5s]; longer waits return *RateLimitedError so the job can give up its worker meanwhile.
	MaxInlineWait time.Duration
	// Attempts is how many times a call tries on network errors, 5xx and 429 before giving up [4].
	Attempts int
	// Backoff is the first retry delay, doubled per attempt, with full jitter [200ms].
	Backoff time.Duration
	// BreakerFailures consecutive failures (network errors, 5xx) open a breaker [5]; it stays
	// open BreakerOpen [30s] before letting one trial request through.
	BreakerFailures uint32
	BreakerOpen     time.Duration
	// MaxBody bounds a page's body [32 MiB].
	MaxBody int64
	// Keys bounds how many (tenant, provider) limiters and breakers are kept [10,000].
	Keys int
}

func (c *Config) defaults() {
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{
			Timeout:       30 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	if c.Rate == 0 {
		c.Rate = 5
	}
	if c.Burst == 0 {
		c.Burst = 10
	}
	if c.MaxInlineWait == 0 {
		c.MaxInlineWait = 5 * time.Second
	}
	if c.Attempts == 0 {
		c.Attempts = 4
	}
	if c.Backoff == 0 {
		c.Backoff = 200 * time.Millisecond
	}
	if c.BreakerFailures == 0 {
		c.BreakerFailures = 5
	}
	if c.BreakerOpen == 0 {
		c.BreakerOpen = 30 * time.Second
	}
	if c.MaxBody == 0 {
		c.MaxBody = 32 << 20
	}
	if c.Keys == 0 {
		c.Keys = 10_000
	}
}

// RateLimitedError means the provider asked to wait longer than a call may block.
type RateLimitedError struct{ RetryAfter time.Duration }

func (e *RateLimitedError) Error() string {
	return fmt.Sprintf("fetch: provider rate limit, retry after %s", e.RetryAfter)
}

// BreakerOpenError means the (tenant, provider) breaker is open: the provider failed repeatedly.
type BreakerOpenError struct{ RetryAfter time.Duration }

func (e *BreakerOpenError) Error() string {
	return fmt.Sprintf("fetch: circuit breaker open, retry after %s", e.RetryAfter)
}

// StatusError is a provider answer that retrying the same call will not fix (4xx other than
// 408 and 429), or a 5xx that outlasted the attempts.
type StatusError struct {
	Status int
	Body   string // a short prefix, for the sync's last error; never the request
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("fetch: provider answered %d: %s", e.Status, e.Body)
}

// Unauthorized reports whether err is the provider refusing the credential (401).
func Unauthorized(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Status == http.StatusUnauthorized
}

// Client fetches pages. Safe for concurrent use.
type Client struct {
	cfg   Config
	mu    sync.Mutex
	peers *lru.Cache[string, *peer]
}

// peer is the flow control of one (tenant, provider).
type peer struct {
	limiter *rate.Limiter
	breaker *gobreaker.CircuitBreaker[*response]
	mu      sync.Mutex
	until   time.Time // no request before this (Retry-After, rate-limit reset)
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// New returns a Client.
func New(cfg Config) (*Client, error) {
	cfg.defaults()
	peers, err := lru.New[string, *peer](cfg.Keys)
	if err != nil {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	return &Client{cfg: cfg, peers: peers}, nil
}

func (c *Client) peer(tenantID, provider string) *peer {
	key := tenantID + "\x00" + provider
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.peers.Get(key); ok {
		return p
	}
	p := &peer{
		limiter: rate.NewLimiter(c.cfg.Rate, c.cfg.Burst),
		breaker: gobreaker.NewCircuitBreaker[*response](gobreaker.Settings{
			Name:    key,
			Timeout: c.cfg.BreakerOpen,
			ReadyToTrip: func(counts gobreaker.Counts) bool {
				return counts.ConsecutiveFailures >= c.cfg.BreakerFailures
			},
			// The caller's own cancellation says nothing about the provider.
			IsExcluded: func(err error) bool {
				return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
			},
		}),
	}
	c.peers.Add(key, p)
	return p
}

// PageRequest is one page to fetch.
type PageRequest struct {
	TenantID string
	Def      *definition.Definition
	BaseURL  string
	// Token is the connection's credential; sent as a bearer token, never logged.
	Token    string
	Since    time.Time
	Position string
}

// FetchPage fetches and parses one page. Errors: *RateLimitedError, *BreakerOpenError,
// *StatusError, definition.ErrBadResponse / ErrForeignNextPage, network and context errors.
func (c *Client) FetchPage(ctx context.Context, req PageRequest) (definition.Page, error) {
	u, err := req.Def.RequestURL(req.BaseURL, req.Position, req.Since)
	if err != nil {
		return definition.Page{}, err
	}
	p := c.peer(req.TenantID, req.Def.Integration)
	var last error
	for attempt := 0; attempt < c.cfg.Attempts; attempt++ {
		if attempt > 0 {
			if err := sleep(ctx, jitter(c.cfg.Backoff<<(attempt-1))); err != nil {
				return definition.Page{}, err
			}
		}
		if err := c.wait(ctx, p); err != nil {
			return definition.Page{}, err
		}
		resp, err := p.breaker.Execute(func() (*response, error) { return c.do(ctx, req, u) })
		switch {
		case errors.Is(err, gobreaker.ErrOpenState), errors.Is(err, gobreaker.ErrTooManyRequests):
			return definition.Page{}, &BreakerOpenError{RetryAfter: c.cfg.BreakerOpen}
		case err != nil && ctx.Err() != nil:
			return definition.Page{}, ctx.Err()
		case err != nil && resp == nil:
			last = err // network error: retry
			continue
		}
		p.observeRateHeaders(resp.header)
		switch {
		case resp.status == http.StatusTooManyRequests:
			wait := retryAfter(resp.header, time.Now())
			if wait <= 0 {
				wait = jitter(c.cfg.Backoff << attempt)
			}
			p.block(time.Now().Add(wait))
			if wait > c.cfg.MaxInlineWait {
				return definition.Page{}, &RateLimitedError{RetryAfter: wait}
			}
			last = &RateLimitedError{RetryAfter: wait}
			continue
		case resp.status >= 500 || resp.status == http.StatusRequestTimeout:
			last = &StatusError{Status: resp.status, Body: snippet(resp.body)}
			if wait := retryAfter(resp.header, time.Now()); wait > 0 {
				p.block(time.Now().Add(min(wait, c.cfg.MaxInlineWait)))
			}
			continue
		case resp.status < 200 || resp.status > 299:
			return definition.Page{}, &StatusError{Status: resp.status, Body: snippet(resp.body)}
		}
		return req.Def.ParsePage(resp.body, resp.header, u, req.Position)
	}
	return definition.Page{}, last
}

// do sends one request. Network errors and 5xx count as breaker failures (returned with the
// response, so the caller still sees the status); 429 and 4xx do not: they say nothing about
// the provider's health.
func (c *Client) do(ctx context.Context, req PageRequest, u string) (*response, error) {
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range req.Def.Headers {
		hreq.Header.Set(k, v)
	}
	if hreq.Header.Get("Accept") == "" {
		hreq.Header.Set("Accept", "application/json")
	}
	hreq.Header.Set("Authorization", "Bearer "+req.Token)
	hresp, err := c.cfg.HTTPClient.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("fetch: %s %s: %w", req.Def.Integration, req.Def.Model, redact(err))
	}
	defer hresp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(hresp.Body, c.cfg.MaxBody+1))
	if err != nil {
		return nil, fmt.Errorf("fetch: read body: %w", err)
	}
	if int64(len(body)) > c.cfg.MaxBody {
		return nil, fmt.Errorf("fetch: page larger than %d bytes", c.cfg.MaxBody)
	}
	resp := &response{status: hresp.StatusCode, header: hresp.Header, body: body}
	if resp.status >= 500 {
		return resp, fmt.Errorf("fetch: status %d", resp.status)
	}
	return resp, nil
}

// redact drops the URL from a client error: it may carry a provider cursor worth nothing to a
// log reader, and for api_key-in-query providers it would carry the key.
func redact(err error) error {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if inner := ue.Unwrap(); inner != nil {
			return inner
		}
	}
	return err
}

// wait blocks until the peer may send: first any provider-imposed pause, then a token.
func (c *Client) wait(ctx context.Context, p *peer) error {
	p.mu.Lock()
	until := p.until
	p.mu.Unlock()
	if d := time.Until(until); d > 0 {
		if d > c.cfg.MaxInlineWait {
			return &RateLimitedError{RetryAfter: d}
		}
		if err := sleep(ctx, d); err != nil {
			return err
		}
	}
	return p.limiter.Wait(ctx)
}

func (p *peer) block(until time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if until.After(p.until) {
		p.until = until
	}
}

// observeRateHeaders pauses the peer until the window resets when the provider says no
// requests remain (X-RateLimit-Remaining: 0 with X-RateLimit-Reset in Unix seconds), so the
// next request is not spent on a certain 429.
func (p *peer) observeRateHeaders(h http.Header) {
	if h.Get("X-RateLimit-Remaining") != "0" {
		return
	}
	reset, err := strconv.ParseInt(h.Get("X-RateLimit-Reset"), 10, 64)
	if err != nil {
		return
	}
	until := time.Unix(reset, 0)
	// A reset far in the future is more likely a different convention (seconds from now).
	if until.After(time.Now().Add(24 * time.Hour)) {
		return
	}
	p.block(until)
}

// retryAfter parses Retry-After (delta seconds or an HTTP date); 0 when absent or invalid.
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return 0
}

func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d/2+1)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func snippet(b []byte) string {
	const n = 200
	s := strings.ToValidUTF8(string(b), "?")
	if len(s) > n {
		s = s[:n]
	}
	return strings.TrimSpace(s)
}
