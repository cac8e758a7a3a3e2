// Package vaultlocal gives tests and `make run` a real Vault server: the one named by VAULT_ADDR
// and VAULT_TOKEN when both are set, else a dev-mode `vault` or `bao` from PATH, else HashiCorp
// Vault built once from the tools/vaultserver wrapper module into the user cache directory.
// It also detects what a server supports (Probe), because open-source Vault silently serves the
// root namespace for any X-Vault-Namespace header and so cannot be trusted to say so itself.
package vaultlocal

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Options configures Start.
type Options struct {
	// Logger receives progress lines (which server, building, started). Nil means slog.Default().
	Logger *slog.Logger
	// Output receives the dev server's own stdout and stderr. Nil discards them.
	Output io.Writer
	// AuditDir, when set, enables a file audit device writing AuditDir/vault-audit.log on a
	// dev server this package started (never on an external VAULT_ADDR server).
	AuditDir string
	// IgnoreEnv starts a private dev server even when VAULT_ADDR and VAULT_TOKEN are set.
	IgnoreEnv bool
	// StartTimeout bounds how long Start waits for sys/health once the process runs
	// (default 60s). It does not bound a first build of the binary: ctx does.
	StartTimeout time.Duration
}

// Server is a running Vault: a dev server this package started, or an external one.
type Server struct {
	addr, token string
	external    bool
	auditPath   string

	cmd      *exec.Cmd
	exited   chan struct{} // closed when the dev server process has exited
	stopOnce sync.Once
	stopErr  error
}

// Addr is the server's base URL, e.g. http://127.0.0.1:41234.
func (s *Server) Addr() string { return s.addr }

// RootToken is a token with the root policy (the dev root token, or VAULT_TOKEN).
func (s *Server) RootToken() string { return s.token }

// External reports whether the server came from VAULT_ADDR/VAULT_TOKEN (not started here).
func (s *Server) External() bool { return s.external }

// AuditLogPath is the file audit device's log, or "" when none was enabled.
func (s *Server) AuditLogPath() string { return s.auditPath }

// Start returns a running, unsealed Vault server. See the package comment for the resolution
// order. The caller must Stop it; a dev server also dies with the calling process on Linux.
func Start(ctx context.Context, opts Options) (*Server, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	timeout := opts.StartTimeout
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	if addr, token := os.Getenv("VAULT_ADDR"), os.Getenv("VAULT_TOKEN"); !opts.IgnoreEnv && addr != "" && token != "" {
		s := &Server{addr: strings.TrimRight(addr, "/"), token: token, external: true}
		wctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		if err := waitHealthy(wctx, s.addr, nil); err != nil {
			return nil, fmt.Errorf("vault at VAULT_ADDR=%s: %w", s.addr, err)
		}
		logger.Info("using external vault", "addr", s.addr)
		return s, nil
	}
	bin, err := FindBinary(ctx, logger)
	if err != nil {
		return nil, err
	}
	// A free port found by listening and closing can be taken by someone else before the
	// server binds it; retry a few times rather than fail a test run on that race.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		s, err := startDev(ctx, bin, opts, timeout)
		if err == nil {
			logger.Info("started vault dev server", "addr", s.addr, "binary", bin)
			return s, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

func startDev(ctx context.Context, bin string, opts Options, timeout time.Duration) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	token, err := randomToken()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	// Not CommandContext: the server must outlive the ctx that merely bounds start-up.
	cmd := exec.Command(bin, "server", "-dev",
		"-dev-root-token-id="+token,
		"-dev-listen-address="+addr,
		"-dev-no-store-token", // never overwrite the developer's ~/.vault-token
	)
	cmd.Env = childEnv()
	cmd.SysProcAttr = childSysProcAttr()
	out := opts.Output
	if out == nil {
		out = io.Discard
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	s := &Server{addr: "http://" + addr, token: token, cmd: cmd, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(s.exited) }()

	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := waitHealthy(wctx, s.addr, s.exited); err != nil {
		_ = s.Stop()
		return nil, fmt.Errorf("vault dev server on %s: %w", addr, err)
	}
	if opts.AuditDir != "" {
		path := filepath.Join(opts.AuditDir, "vault-audit.log")
		body := map[string]any{"type": "file", "options": map[string]string{"file_path": path}}
		if err := call(ctx, http.MethodPut, s.addr, "/v1/sys/audit/bulkhead-file", token, body); err != nil {
			_ = s.Stop()
			return nil, fmt.Errorf("enable audit device: %w", err)
		}
		s.auditPath = path
	}
	return s, nil
}

// Stop terminates a dev server this package started (SIGTERM, then SIGKILL after 5 s) and is
// a no-op for an external server. It is safe to call more than once.
func (s *Server) Stop() error {
	if s == nil || s.cmd == nil {
		return nil
	}
	s.stopOnce.Do(func() {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(5 * time.Second):
			s.stopErr = s.cmd.Process.Kill()
			<-s.exited
		}
	})
	return s.stopErr
}

// childEnv drops VAULT_* variables so that a developer's shell settings (VAULT_ADDR of another
// server, VAULT_NAMESPACE…) cannot change how the dev server starts.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") {
			env = append(env, kv)
		}
	}
	return env
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomToken() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "root-" + hex.EncodeToString(b), nil
}

// waitHealthy polls sys/health until the server is initialized, unsealed and active, the
// process exits, or ctx ends.
func waitHealthy(ctx context.Context, addr string, exited <-chan struct{}) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		h, err := health(ctx, http.DefaultClient, addr)
		if err == nil && h.Initialized && !h.Sealed {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("not ready (initialized=%v sealed=%v)", h.Initialized, h.Sealed)
		}
		lastErr = err
		select {
		case <-exited:
			return errors.New("server process exited during start-up")
		case <-ctx.Done():
			return fmt.Errorf("not healthy before deadline: %w", lastErr)
		case <-tick.C:
		}
	}
}

type healthResponse struct {
	Initialized bool   `json:"initialized"`
	Sealed      bool   `json:"sealed"`
	Standby     bool   `json:"standby"`
	Version     string `json:"version"`
	Enterprise  bool   `json:"enterprise"`
}

func health(ctx context.Context, hc *http.Client, addr string) (healthResponse, error) {
	var h healthResponse
	// Vault answers sys/health with non-2xx codes for sealed/standby states; the body is still
	// the health document, so decode it whatever the status.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, addr+"/v1/sys/health?standbyok=true&perfstandbyok=true", nil)
	if err != nil {
		return h, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return h, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		return h, fmt.Errorf("decode sys/health (status %d): %w", resp.StatusCode, err)
	}
	return h, nil
}

// Capabilities is what Probe found out about a server.
type Capabilities struct {
	// Version is the server's version string, e.g. "1.21.1" or "1.21.1+ent".
	Version string
	// Enterprise is sys/health's enterprise flag (false on OpenBao, which has namespaces).
	Enterprise bool
	// Namespaces reports that LIST sys/namespaces is a real endpoint on this server.
	Namespaces bool
	// Reason says in words why Namespaces is what it is; tests print it when they skip.
	Reason string
}

// Probe reports what the server at addr supports, using token for the namespace check. It
// never trusts X-Vault-Namespace: open-source Vault accepts any namespace header and silently
// serves the root namespace. Namespaces is decided by LIST sys/namespaces instead, which
// open-source Vault answers 404 "enterprise-only feature" and older OpenBao "unsupported path",
// while a server with namespaces answers 200 (or 404 with no error text for an empty list).
// This is detection only; a broker in namespace mode must still prove isolation with a canary.
func Probe(ctx context.Context, addr, token string) (Capabilities, error) {
	return ProbeWith(ctx, http.DefaultClient, addr, token, "")
}

// ProbeWith is Probe over hc (for TLS settings or a shared transport), listing the child
// namespaces of namespace ("" for the root namespace) — the namespace token lives in.
func ProbeWith(ctx context.Context, hc *http.Client, addr, token, namespace string) (Capabilities, error) {
	addr = strings.TrimRight(addr, "/")
	h, err := health(ctx, hc, addr)
	if err != nil {
		return Capabilities{}, fmt.Errorf("probe %s: %w", addr, err)
	}
	c := Capabilities{Version: h.Version, Enterprise: h.Enterprise}
	var errs struct {
		Errors []string `json:"errors"`
	}
	status, err := do(ctx, hc, "LIST", addr, "/v1/sys/namespaces", token, namespace, nil, &errs)
	if err != nil {
		return c, fmt.Errorf("probe %s: list sys/namespaces: %w", addr, err)
	}
	switch {
	case status == http.StatusOK:
		c.Namespaces, c.Reason = true, "LIST sys/namespaces answered 200"
	case status == http.StatusNotFound && len(errs.Errors) == 0:
		c.Namespaces, c.Reason = true, "LIST sys/namespaces answered an empty list"
	case status == http.StatusNotFound:
		c.Reason = fmt.Sprintf("server %s has no namespaces: LIST sys/namespaces answered 404 %q", h.Version, strings.Join(errs.Errors, "; "))
	case status == http.StatusForbidden:
		c.Reason = "the probing token may not LIST sys/namespaces; namespace support unknown"
	default:
		c.Reason = fmt.Sprintf("LIST sys/namespaces answered %d %q", status, strings.Join(errs.Errors, "; "))
	}
	return c, nil
}

// call sends one request and fails on any non-2xx status.
func call(ctx context.Context, method, addr, path, token string, body any) error {
	var errs struct {
		Errors []string `json:"errors"`
	}
	status, err := do(ctx, http.DefaultClient, method, addr, path, token, "", body, &errs)
	if err != nil {
		return err
	}
	if status/100 != 2 {
		return fmt.Errorf("%s %s: %d %s", method, path, status, strings.Join(errs.Errors, "; "))
	}
	return nil
}

// do sends one request and decodes a JSON body (if any) into into, whatever the status.
func do(ctx context.Context, hc *http.Client, method, addr, path, token, namespace string, body, into any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, addr+path, rd)
	if err != nil {
		return 0, err
	}
	if token != "" {
		req.Header.Set("X-Vault-Token", token)
	}
	if namespace != "" {
		req.Header.Set("X-Vault-Namespace", namespace)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if len(raw) > 0 && into != nil {
		_ = json.Unmarshal(raw, into) // error bodies are not always JSON; the status decides
	}
	return resp.StatusCode, nil
}
