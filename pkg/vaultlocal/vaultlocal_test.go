package vaultlocal

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

func startPrivate(t *testing.T, opts Options) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute) // may build once
	defer cancel()
	opts.IgnoreEnv = true
	s, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = s.Stop() })
	return s
}

func TestStartProbeStop(t *testing.T) {
	auditDir := t.TempDir()
	s := startPrivate(t, Options{AuditDir: auditDir})
	ctx := context.Background()
	if s.External() || !strings.HasPrefix(s.Addr(), "http://127.0.0.1:") || !strings.HasPrefix(s.RootToken(), "root-") {
		t.Fatalf("server: external=%v addr=%q", s.External(), s.Addr())
	}
	caps, err := Probe(ctx, s.Addr(), s.RootToken())
	if err != nil {
		t.Fatalf("Probe: %v", err)
	}
	if caps.Version == "" || caps.Reason == "" {
		t.Fatalf("Probe: %+v", caps)
	}
	t.Logf("probe: %+v", caps)
	// Open-source HashiCorp Vault (1.x, enterprise=false) has no namespaces, whatever it does
	// with the header. (OpenBao, 2.x, has them without being "enterprise".)
	if !caps.Enterprise && strings.HasPrefix(caps.Version, "1.") && caps.Namespaces {
		t.Fatalf("open-source Vault reported as having namespaces: %+v", caps)
	}

	// The dev audit device records requests, with secret values HMAC'd rather than in clear.
	const secret = "do-not-log-this-value"
	if status := request(t, http.MethodPost, s.Addr()+"/v1/secret/data/audit-check", s.RootToken(), `{"data":{"v":"`+secret+`"}}`); status != http.StatusOK {
		t.Fatalf("write secret: %d", status)
	}
	log, err := os.ReadFile(s.AuditLogPath())
	if err != nil {
		t.Fatalf("audit log: %v", err)
	}
	if !bytes.Contains(log, []byte("secret/data/audit-check")) {
		t.Fatalf("audit log lacks the request: %s", log)
	}
	if bytes.Contains(log, []byte(secret)) {
		t.Fatal("audit log holds a secret value in clear")
	}

	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if _, err := http.Get(s.Addr() + "/v1/sys/health"); err == nil {
		t.Fatal("server still answers after Stop")
	}
}

func TestStartUsesVaultAddrAndToken(t *testing.T) {
	real := startPrivate(t, Options{})
	t.Setenv("VAULT_ADDR", real.Addr()+"/")
	t.Setenv("VAULT_TOKEN", real.RootToken())
	s, err := Start(context.Background(), Options{})
	if err != nil {
		t.Fatalf("Start with VAULT_ADDR: %v", err)
	}
	if !s.External() || s.Addr() != real.Addr() || s.RootToken() != real.RootToken() {
		t.Fatalf("got external=%v addr=%q", s.External(), s.Addr())
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	// Stopping the external handle must not stop the server behind it.
	if status := request(t, http.MethodGet, real.Addr()+"/v1/sys/health", "", ""); status != http.StatusOK {
		t.Fatalf("external server after Stop: %d", status)
	}
}

func request(t *testing.T, method, url, token, body string) int {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("X-Vault-Token", token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
