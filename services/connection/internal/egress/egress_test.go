package egress_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/services/connection/internal/egress"
)

func TestPublic(t *testing.T) {
	tests := []struct {
		addr string
		want bool
	}{
		{"93.184.216.34", true},
		{"2606:2800:220:1:248:1893:25c8:1946", true},
		{"127.0.0.1", false},
		{"127.255.255.254", false},
		{"10.0.0.1", false},
		{"172.16.5.4", false},
		{"192.168.1.1", false},
		{"169.254.169.254", false}, // cloud metadata
		{"100.64.0.1", false},      // CGNAT
		{"0.0.0.0", false},
		{"0.1.2.3", false},
		{"224.0.0.1", false},
		{"255.255.255.255", false},
		{"::1", false},
		{"::", false},
		{"fe80::1", false},
		{"fc00::1", false},
		{"ff02::1", false},
		{"::ffff:127.0.0.1", false}, // IPv4-mapped loopback
		{"::ffff:169.254.169.254", false},
		{"::ffff:93.184.216.34", true},
		{"64:ff9b::7f00:1", false}, // NAT64 of 127.0.0.1
		{"2002:7f00:1::", false},   // 6to4 of 127.0.0.1
	}
	for _, tt := range tests {
		if got := egress.Public(netip.MustParseAddr(tt.addr)); got != tt.want {
			t.Errorf("Public(%s) = %v, want %v", tt.addr, got, tt.want)
		}
	}
}

func TestCheckURL(t *testing.T) {
	g, err := egress.New(egress.Config{AllowHosts: []string{"127.0.0.1:8443", "allowed.internal"}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		url string
		ok  bool
	}{
		{"https://api.example.com/v1/me", true},
		{"https://api.example.com:8443/v1", true},
		{"https://93.184.216.34/", true},
		{"https://127.0.0.1:8443/ok", true}, // allow-listed host:port
		{"https://allowed.internal/x", true},
		{"http://api.example.com/", false}, // https only
		{"ftp://api.example.com/", false},
		{"https://user@api.example.com/", false},
		{"https://api.example.com@127.0.0.1/", false},
		{"https:///path", false},
		{"https://127.0.0.1/", false},      // port 443 is not allow-listed
		{"https://127.0.0.1:9000/", false}, // nor another port
		{"https://10.0.0.1/", false},
		{"https://169.254.169.254/latest/meta-data", false},
		{"https://[::1]/", false},
		{"https://[::ffff:127.0.0.1]/", false},
		{"https://[::ffff:7f00:1]/", false},
		{"https://[fe80::1%25eth0]/", false},
		{"https://2130706433/", false},   // decimal 127.0.0.1
		{"https://0177.0.0.1/", false},   // octal
		{"https://0x7f.0.0.1/", false},   // hex
		{"https://0x7f000001/", false},   // hex, one label
		{"https://127.1/", false},        // short form
		{"https://017700000001/", false}, // octal, one label
		{"https://1.2.3.4.5/", false},
		{"https://api.example.com./", true},
		{"https://v2.example.com/", true},
	}
	for _, tt := range tests {
		u, err := url.Parse(tt.url)
		if err != nil {
			t.Fatalf("%s: %v", tt.url, err)
		}
		err = g.CheckURL(u)
		if tt.ok && err != nil {
			t.Errorf("CheckURL(%s) = %v, want ok", tt.url, err)
		}
		if !tt.ok && !errors.Is(err, egress.ErrRefused) {
			t.Errorf("CheckURL(%s) = %v, want ErrRefused", tt.url, err)
		}
	}
}

// TestControlAfterResolution dials through net.Dialer with Control: a name resolving to
// loopback (localhost) and IP literals are refused before any connection is made, even though
// a server listens there.
func TestControlAfterResolution(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())

	d := &net.Dialer{Timeout: 2 * time.Second, Control: egress.Control}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, host := range []string{"localhost", "127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1", "10.1.2.3", "169.254.169.254", "0.0.0.0"} {
		c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, port))
		if err == nil {
			c.Close()
			t.Errorf("dial %s: connected, want refused", host)
			continue
		}
		if !errors.Is(err, egress.ErrRefused) {
			t.Errorf("dial %s: %v, want ErrRefused", host, err)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("server saw %d requests", n)
	}
}

// TestClient runs real HTTP over loopback: the allow-listed "provider" answers, a redirect to
// another loopback server (not allow-listed) is refused without reaching it, redirects within
// the allowed hosts are followed at most MaxRedirects times, and a name resolving to loopback
// is refused by the dialer.
func TestClient(t *testing.T) {
	var internalHits atomic.Int32
	internal := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { internalHits.Add(1) }))
	defer internal.Close()
	var provider *httptest.Server
	provider = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			_, _ = w.Write([]byte("ok"))
		case "/to-internal":
			http.Redirect(w, r, internal.URL+"/internal", http.StatusFound)
		case "/to-internal-by-name":
			_, port, _ := net.SplitHostPort(internal.Listener.Addr().String())
			http.Redirect(w, r, "http://localhost:"+port+"/internal", http.StatusFound)
		case "/loop":
			http.Redirect(w, r, provider.URL+"/loop", http.StatusFound)
		case "/hop":
			http.Redirect(w, r, provider.URL+"/ok", http.StatusFound)
		}
	}))
	defer provider.Close()
	providerHost := provider.Listener.Addr().String()

	g, err := egress.New(egress.Config{AllowHosts: []string{providerHost}, AllowHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	// What the integration allows: the provider, and (to prove the dialer's own check) any
	// host at all for the by-name case.
	onlyProvider := func(u *url.URL) bool { return u.Host == providerHost }
	anyHost := func(*url.URL) bool { return true }

	tests := []struct {
		name    string
		path    string
		allowed func(*url.URL) bool
		ok      bool
	}{
		{"allowed host", "/ok", onlyProvider, true},
		{"one redirect within the host", "/hop", onlyProvider, true},
		{"redirect to another host", "/to-internal", onlyProvider, false},
		{"redirect to an internal address, even if the integration allowed it", "/to-internal", anyHost, false},
		{"redirect to a name resolving to loopback", "/to-internal-by-name", anyHost, false},
		{"redirect loop", "/loop", onlyProvider, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, provider.URL+tt.path, nil)
			resp, err := g.Client(tt.allowed).Do(req)
			if tt.ok {
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("status %d", resp.StatusCode)
				}
				return
			}
			if err == nil {
				resp.Body.Close()
				t.Fatalf("status %d, want refusal", resp.StatusCode)
			}
			if !errors.Is(err, egress.ErrRefused) {
				t.Fatalf("err = %v, want ErrRefused", err)
			}
		})
	}
	if n := internalHits.Load(); n != 0 {
		t.Fatalf("the internal server saw %d requests", n)
	}
}

func TestNewRefusesBadAllowList(t *testing.T) {
	for _, h := range []string{"", "https://x", "a@b", "x/y"} {
		if _, err := egress.New(egress.Config{AllowHosts: []string{h}}); err == nil {
			t.Errorf("New(%q) = nil error", h)
		}
	}
}
