// Package webhook delivers the sync service's events to tenants' HTTPS endpoints from an
// outbox: Emit writes one delivery row per subscribed endpoint, and a River job per delivery, in
// the transaction that caused the event, so an event is delivered if and only if its cause
// committed. The River worker signs each attempt (HMAC-SHA256 over timestamp and body, see
// Sign), retries network errors, 5xx, 408 and 429 (honouring Retry-After) with exponential
// backoff and jitter for up to MaxAge, behind a circuit breaker per endpoint, and dead-letters
// what it cannot deliver; Replay queues a delivery again.
//
// SSRF: endpoint URLs must be https; their host must resolve only to public addresses, checked
// at registration and again on every connection (after DNS resolution, in the dialer), and
// redirects are not followed.
package webhook

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"sync"
	"syscall"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/sony/gobreaker/v2"

	"github.com/bulkhead/bulkhead/pkg/pgtenant"
)

// Headers of a delivery.
const (
	HeaderID        = "Bulkhead-Webhook-Id"
	HeaderTimestamp = "Bulkhead-Webhook-Timestamp"
	HeaderSignature = "Bulkhead-Webhook-Signature"
)

// Event kinds, as stored and as sent in the body's "type".
const (
	EventSyncCompleted     = "sync.completed"
	EventSyncFailed        = "sync.failed"
	EventRecordsChanged    = "records.changed"
	EventConnectionChanged = "connection.changed"
)

// Queue is the River queue deliveries are worked from, apart from sync runs so a slow receiver
// never holds a sync worker.
const Queue = "webhooks"

// Sign returns the Bulkhead-Webhook-Signature value for body sent at timestamp (Unix seconds):
// "v1=" and the hex HMAC-SHA256, keyed with the endpoint's signing secret, of the decimal
// timestamp, a ".", and the raw body.
func Sign(secret []byte, timestamp int64, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(strconv.FormatInt(timestamp, 10)))
	m.Write([]byte("."))
	m.Write(body)
	return "v1=" + hex.EncodeToString(m.Sum(nil))
}

// Verify checks a delivery as a receiver should: the signature in constant time, and a
// timestamp within tolerance of now.
func Verify(secret []byte, header http.Header, body []byte, now time.Time, tolerance time.Duration) bool {
	ts, err := strconv.ParseInt(header.Get(HeaderTimestamp), 10, 64)
	if err != nil {
		return false
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return false
	}
	return hmac.Equal([]byte(header.Get(HeaderSignature)), []byte(Sign(secret, ts, body)))
}

// NewSecret returns a fresh signing secret, as shown to the tenant once; its bytes are the key.
func NewSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "whsec_" + base64.RawURLEncoding.EncodeToString(b), nil
}

// Config configures a Dispatcher. Zero values take the defaults in brackets.
type Config struct {
	DB     *pgtenant.DB
	Logger *slog.Logger
	// Timeout bounds one attempt [10s].
	Timeout time.Duration
	// FirstRetry is the first retry delay, doubled per attempt up to MaxRetry, jittered ±20%
	// [10s, 1h]; MaxAge is how long a delivery is retried before it is dead-lettered [24h];
	// MaxAttempts caps the attempts too [30].
	FirstRetry, MaxRetry, MaxAge time.Duration
	MaxAttempts                  int
	// BreakerFailures consecutive failures open an endpoint's breaker for BreakerOpen [5, 1m].
	BreakerFailures uint32
	BreakerOpen     time.Duration
	// AllowLoopback admits endpoints on 127.0.0.1/::1 (tests only); TLS trusts the test
	// receiver's certificate.
	AllowLoopback bool
	TLS           *tls.Config
	// Resolver resolves endpoint hosts at registration [net.DefaultResolver].
	Resolver *net.Resolver
}

// Dispatcher emits events into the outbox and works their deliveries.
type Dispatcher struct {
	cfg      Config
	client   *http.Client
	mu       sync.Mutex
	breakers *lru.Cache[string, *gobreaker.CircuitBreaker[int]]
}

// New returns a Dispatcher.
func New(cfg Config) (*Dispatcher, error) {
	if cfg.DB == nil {
		return nil, errors.New("webhook: Config.DB is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.FirstRetry <= 0 {
		cfg.FirstRetry = 10 * time.Second
	}
	if cfg.MaxRetry <= 0 {
		cfg.MaxRetry = time.Hour
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = 24 * time.Hour
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 30
	}
	if cfg.BreakerFailures == 0 {
		cfg.BreakerFailures = 5
	}
	if cfg.BreakerOpen <= 0 {
		cfg.BreakerOpen = time.Minute
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	breakers, err := lru.New[string, *gobreaker.CircuitBreaker[int]](10_000)
	if err != nil {
		return nil, err
	}
	d := &Dispatcher{cfg: cfg, breakers: breakers}
	dialer := &net.Dialer{Timeout: cfg.Timeout, Control: d.control}
	transport := &http.Transport{
		DialContext:         dialer.DialContext,
		TLSClientConfig:     cfg.TLS,
		TLSHandshakeTimeout: cfg.Timeout,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
		// No proxy from the environment: it would dial on our behalf, past the address check.
		Proxy: nil,
	}
	d.client = &http.Client{
		Transport:     transport,
		Timeout:       cfg.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return d, nil
}

// ErrForbiddenURL means an endpoint URL is not https or points at an internal address.
var ErrForbiddenURL = errors.New("webhook: endpoint URL not allowed")

// CheckURL validates an endpoint URL at registration: https, no credentials, and a host that
// resolves only to public addresses.
func (d *Dispatcher) CheckURL(ctx context.Context, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.Fragment != "" {
		return fmt.Errorf("%w: want https://host/path without credentials", ErrForbiddenURL)
	}
	host := u.Hostname()
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		ips, err := d.cfg.Resolver.LookupNetIP(ctx, "ip", host)
		if err != nil || len(ips) == 0 {
			return fmt.Errorf("%w: %s does not resolve", ErrForbiddenURL, host)
		}
		addrs = ips
	}
	for _, a := range addrs {
		if !d.allowed(a) {
			return fmt.Errorf("%w: %s resolves to an internal address", ErrForbiddenURL, host)
		}
	}
	return nil
}

// control runs for every connection the delivery client opens, with the address actually
// dialled: DNS may have changed since registration (rebinding), so the check is repeated here.
func (d *Dispatcher) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil || !d.allowed(ap.Addr()) {
		return fmt.Errorf("%w: refusing to connect to %s", ErrForbiddenURL, address)
	}
	return nil
}

var (
	cgnat      = netip.MustParsePrefix("100.64.0.0/10")
	thisNet    = netip.MustParsePrefix("0.0.0.0/8")
	benchmark  = netip.MustParsePrefix("198.18.0.0/15")
	reserved   = netip.MustParsePrefix("240.0.0.0/4")
	nat64      = netip.MustParsePrefix("64:ff9b::/96")
	v4mappedV6 = netip.MustParsePrefix("::ffff:0:0/96")
)

func (d *Dispatcher) allowed(a netip.Addr) bool {
	if a.Is4In6() || v4mappedV6.Contains(a) {
		a = a.Unmap()
	}
	if a.IsLoopback() {
		return d.cfg.AllowLoopback
	}
	switch {
	case !a.IsValid(), a.IsUnspecified(), a.IsPrivate(), a.IsLinkLocalUnicast(), a.IsLinkLocalMulticast(),
		a.IsInterfaceLocalMulticast(), a.IsMulticast(),
		cgnat.Contains(a), thisNet.Contains(a), benchmark.Contains(a), reserved.Contains(a), nat64.Contains(a):
		return false
	}
	return true
}

func (d *Dispatcher) breaker(endpointID string) *gobreaker.CircuitBreaker[int] {
	d.mu.Lock()
	defer d.mu.Unlock()
	if b, ok := d.breakers.Get(endpointID); ok {
		return b
	}
	b := gobreaker.NewCircuitBreaker[int](gobreaker.Settings{
		Name:    endpointID,
		Timeout: d.cfg.BreakerOpen,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return c.ConsecutiveFailures >= d.cfg.BreakerFailures
		},
		// Only an unreachable or failing receiver trips it: a 429 or a 4xx is an answer.
		IsSuccessful: func(err error) bool {
			o := asOutcome(err)
			return err == nil || (o != nil && o.status != 0 && o.status != http.StatusRequestTimeout && o.status < 500)
		},
	})
	d.breakers.Add(endpointID, b)
	return b
}
