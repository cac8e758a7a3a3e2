// Package egress guards the connection service's calls to provider APIs on behalf of tenants
// (the Proxy RPC) against server-side request forgery. A URL must name a host the integration
// allows (the caller's check, catalog.Endpoints.AllowsURL) and pass CheckURL here (no user
// info, no numeric host spelt in a non-canonical way); every TCP connection is checked again
// after DNS resolution, in the dialer, so a name resolving — or rebinding — to a private,
// loopback, link-local, multicast, unspecified or CGNAT address is refused unless the operator
// allow-listed that exact host. Redirects are followed only to allowed URLs, and a bounded
// number of times.
package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// ErrRefused is wrapped by every refusal of this package: a URL, a redirect or a connection
// the guard will not allow.
var ErrRefused = errors.New("egress: refused")

// Defaults used when a Config field is zero.
const (
	DefaultConnectTimeout = 5 * time.Second
	DefaultTimeout        = 30 * time.Second
	DefaultMaxRedirects   = 3
)

// Config configures a Guard.
type Config struct {
	// AllowHosts are hosts that may be (or resolve to) non-public addresses: "host" allows the
	// host on every port, "host:port" on that port only. Matched exactly (case-insensitively)
	// against the host as written in the URL — the name, not the address it resolves to.
	// Production leaves it empty; tests list the loopback provider ("127.0.0.1:PORT").
	AllowHosts []string
	// AllowHTTP permits http:// URLs (tests with a loopback provider); otherwise https only.
	AllowHTTP bool
	// ConnectTimeout bounds one TCP connect; Timeout one whole call, redirects and body
	// included.
	ConnectTimeout time.Duration
	Timeout        time.Duration
	// MaxRedirects bounds the redirects followed per call (default 3; negative follows none).
	MaxRedirects int
}

// Guard builds guarded HTTP clients. Safe for concurrent use; clients share one transport.
type Guard struct {
	allow        map[string]bool
	allowHTTP    bool
	timeout      time.Duration
	maxRedirects int
	transport    *http.Transport
}

// New checks cfg and builds a Guard.
func New(cfg Config) (*Guard, error) {
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	switch {
	case cfg.MaxRedirects == 0:
		cfg.MaxRedirects = DefaultMaxRedirects
	case cfg.MaxRedirects < 0:
		cfg.MaxRedirects = 0
	}
	if cfg.ConnectTimeout < 0 || cfg.Timeout < 0 {
		return nil, errors.New("egress: timeouts must not be negative")
	}
	g := &Guard{allow: make(map[string]bool), allowHTTP: cfg.AllowHTTP, timeout: cfg.Timeout, maxRedirects: cfg.MaxRedirects}
	for _, h := range cfg.AllowHosts {
		h = strings.ToLower(strings.TrimSpace(h))
		if h == "" || strings.ContainsAny(h, "/@?#") {
			return nil, fmt.Errorf("egress: allow-listed host %q is not host or host:port", h)
		}
		g.allow[h] = true
	}
	open := &net.Dialer{Timeout: cfg.ConnectTimeout}
	guarded := &net.Dialer{Timeout: cfg.ConnectTimeout, Control: Control}
	g.transport = &http.Transport{
		// Never through an environment-configured proxy: the dial checks must see the real
		// destination.
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if g.allowed(addr) {
				return open.DialContext(ctx, network, addr)
			}
			return guarded.DialContext(ctx, network, addr)
		},
		TLSHandshakeTimeout:    cfg.ConnectTimeout,
		ResponseHeaderTimeout:  cfg.Timeout,
		MaxResponseHeaderBytes: 64 << 10,
		MaxIdleConns:           256,
		MaxIdleConnsPerHost:    16,
		IdleConnTimeout:        90 * time.Second,
		ForceAttemptHTTP2:      true,
	}
	return g, nil
}

// allowed reports whether addr ("host:port" as the transport dials it) is allow-listed.
func (g *Guard) allowed(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	addr = strings.ToLower(addr)
	return g.allow[strings.ToLower(host)] || g.allow[addr]
}

// Close drops idle connections.
func (g *Guard) Close() { g.transport.CloseIdleConnections() }

// CheckURL refuses what no provider URL needs and what SSRF tricks use: a scheme other than
// https (or http when allowed), user info (`https://api.example.com@10.0.0.1/`), an empty
// host, an IPv6 zone, a numeric host spelt in a form only some resolvers read as an IPv4
// address (decimal `2130706433`, octal `0177.0.0.1`, hex `0x7f.1`, short `127.1`), and an IP
// literal — IPv4-mapped IPv6 included — of a non-public address that is not allow-listed.
// Where a name resolves is the dialer's check.
func (g *Guard) CheckURL(u *url.URL) error {
	if u == nil {
		return fmt.Errorf("%w: no URL", ErrRefused)
	}
	switch {
	case u.Scheme == "https", u.Scheme == "http" && g.allowHTTP:
	default:
		return fmt.Errorf("%w: scheme %q", ErrRefused, u.Scheme)
	}
	if u.Opaque != "" || u.User != nil {
		return fmt.Errorf("%w: user info or opaque URL", ErrRefused)
	}
	host := u.Hostname()
	if host == "" {
		return fmt.Errorf("%w: no host", ErrRefused)
	}
	if strings.Contains(host, "%") {
		return fmt.Errorf("%w: IPv6 zone in host", ErrRefused)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if !Public(a) && !g.allowed(hostPort(u)) {
			return fmt.Errorf("%w: %s is not a public address", ErrRefused, a)
		}
		return nil
	}
	if looksNumeric(host) {
		return fmt.Errorf("%w: numeric host %q is not a canonical IP address", ErrRefused, host)
	}
	return nil
}

// hostPort is u's host with the port the transport will dial.
func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "443"
		if u.Scheme == "http" {
			port = "80"
		}
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// looksNumeric reports whether every dot-separated label of host is a number (decimal, octal
// or 0x hex): inet_aton, which cgo resolvers and many other clients use, reads such hosts as
// IPv4 addresses even though they are not dotted quads. No real DNS name has an all-numeric
// last label.
func looksNumeric(host string) bool {
	host = strings.TrimSuffix(host, ".")
	labels := strings.Split(host, ".")
	last := strings.ToLower(labels[len(labels)-1])
	if last == "" {
		return false
	}
	if strings.HasPrefix(last, "0x") {
		last = last[2:]
		return last == "" || strings.Trim(last, "0123456789abcdef") == ""
	}
	return strings.Trim(last, "0123456789") == ""
}

// Control is a net.Dialer Control function: it runs for every connection with the address
// actually dialled — after DNS resolution, so also after a rebinding — and refuses every
// address that is not Public.
func Control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: unparsable address %q", ErrRefused, address)
	}
	if !Public(ap.Addr()) {
		return fmt.Errorf("%w: %s is not a public address", ErrRefused, ap.Addr())
	}
	return nil
}

var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),     // "this network"
	netip.MustParsePrefix("100.64.0.0/10"), // CGNAT (RFC 6598)
	netip.MustParsePrefix("192.0.0.0/24"),  // IETF protocol assignments
	netip.MustParsePrefix("198.18.0.0/15"), // benchmarking
	netip.MustParsePrefix("240.0.0.0/4"),   // reserved, and the broadcast address
	netip.MustParsePrefix("64:ff9b::/96"),  // NAT64: may translate to an internal IPv4 address
	netip.MustParsePrefix("64:ff9b:1::/48"),
	netip.MustParsePrefix("2002::/16"), // 6to4: embeds an IPv4 address
	netip.MustParsePrefix("fec0::/10"), // deprecated site-local
}

// Public reports whether a is an address a provider API may have: not private (RFC 1918, ULA),
// loopback, link-local, multicast, unspecified, CGNAT or otherwise reserved. IPv4-mapped IPv6
// addresses are judged as the IPv4 address they carry.
func Public(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsValid() || a.IsUnspecified() || a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() ||
		a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast() || a.IsMulticast() || a.Zone() != "" {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(a) {
			return false
		}
	}
	return true
}

// Client returns a client for one call whose redirects may go only to URLs allowed accepts
// (and CheckURL passes), at most MaxRedirects times. Its Timeout bounds the whole call.
func (g *Guard) Client(allowed func(*url.URL) bool) *http.Client {
	return &http.Client{
		Transport: g.transport,
		Timeout:   g.timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) > g.maxRedirects {
				return fmt.Errorf("%w: more than %d redirects", ErrRefused, g.maxRedirects)
			}
			if err := g.CheckURL(req.URL); err != nil {
				return err
			}
			if !allowed(req.URL) {
				return fmt.Errorf("%w: redirect to a host the integration does not allow", ErrRefused)
			}
			return nil
		},
	}
}
