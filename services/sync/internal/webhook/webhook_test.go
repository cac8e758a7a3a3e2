package webhook

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/pkg/pgtenant"
)

func TestSignAndVerify(t *testing.T) {
	secret := []byte("whsec_test")
	body := []byte(`{"id":"e1"}`)
	now := time.Now()
	h := http.Header{}
	h.Set(HeaderTimestamp, "1700000000")
	h.Set(HeaderSignature, Sign(secret, 1700000000, body))
	if !Verify(secret, h, body, time.Unix(1700000010, 0), 5*time.Minute) {
		t.Fatal("a correct signature did not verify")
	}
	tests := []struct {
		name   string
		secret []byte
		body   []byte
		now    time.Time
	}{
		{"tampered body", secret, []byte(`{"id":"e2"}`), time.Unix(1700000010, 0)},
		{"wrong secret", []byte("whsec_other"), body, time.Unix(1700000010, 0)},
		{"replayed later", secret, body, now},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if Verify(tc.secret, h, tc.body, tc.now, 5*time.Minute) {
				t.Fatal("verified")
			}
		})
	}
}

func dispatcher(t *testing.T, allowLoopback bool) *Dispatcher {
	t.Helper()
	// The database is not reached by URL checks or attempts.
	d, err := New(Config{DB: pgtenant.New(nil), AllowLoopback: allowLoopback, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestCheckURL(t *testing.T) {
	d := dispatcher(t, false)
	refused := []string{
		"http://93.184.216.34/hook",
		"https://user:pass@93.184.216.34/hook",
		"https://127.0.0.1/hook",
		"https://[::1]/hook",
		"https://10.0.0.1/hook",
		"https://192.168.1.10/hook",
		"https://172.16.0.1/hook",
		"https://169.254.169.254/latest/meta-data",
		"https://100.64.0.1/hook",
		"https://0.0.0.0/hook",
		"https://[fd00::1]/hook",
		"https://[fe80::1]/hook",
		"https://[::ffff:10.0.0.1]/hook",
		"https://[64:ff9b::a00:1]/hook",
		"https://localhost/hook",
	}
	for _, u := range refused {
		if err := d.CheckURL(context.Background(), u); !errors.Is(err, ErrForbiddenURL) {
			t.Errorf("CheckURL(%s) = %v, want ErrForbiddenURL", u, err)
		}
	}
	if err := d.CheckURL(context.Background(), "https://93.184.216.34/hook"); err != nil {
		t.Errorf("public address refused: %v", err)
	}
}

// TestDialRefusesInternalAddresses: the check is repeated when connecting, so a host that
// passed registration and later resolves inside (DNS rebinding) is still refused.
func TestDialRefusesInternalAddresses(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		t.Error("an internal receiver was reached")
	}))
	defer srv.Close()
	d := dispatcher(t, false)
	o := d.attempt(context.Background(), &attemptTarget{delivery: &Delivery{EventID: "e"}, url: srv.URL, secret: []byte("k"), body: []byte("{}")})
	if o.err == nil || o.status != 0 {
		t.Fatalf("attempt = %+v, want a refused connection", o)
	}
}

func TestBackoff(t *testing.T) {
	d := dispatcher(t, false)
	prev := time.Duration(0)
	for a := 1; a <= 12; a++ {
		b := d.backoff(a)
		if b > time.Hour*6/5 {
			t.Fatalf("attempt %d backs off %s, above the cap", a, b)
		}
		if a <= 8 && b < prev/2 {
			t.Fatalf("attempt %d backs off %s after %s", a, b, prev)
		}
		prev = b
	}
}
