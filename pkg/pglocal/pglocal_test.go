package pglocal

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func startServer(t *testing.T, opts Options) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return s
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(func() { conn.Close(ctx) })
	return conn
}

func TestStartTempDirFixedPort(t *testing.T) {
	t.Parallel()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, Options{Port: port})
	if s.Port() != port || !strings.Contains(s.URL("x"), ":"+strconv.Itoa(port)+"/x") {
		t.Fatalf("Port()=%d URL=%s, want port %d", s.Port(), s.URL("x"), port)
	}
	ctx := context.Background()
	conn := connect(t, s.URL("postgres"))

	var (
		user     string
		super    bool
		fsync    string
		maxConns int
		encoding string
	)
	err = conn.QueryRow(ctx, `SELECT current_user, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
		current_setting('fsync'), current_setting('max_connections')::int, pg_encoding_to_char(encoding)
		FROM pg_database WHERE datname = current_database()`).Scan(&user, &super, &fsync, &maxConns, &encoding)
	if err != nil {
		t.Fatal(err)
	}
	if user != Superuser || !super {
		t.Errorf("connected as %q (superuser %v), want superuser %q", user, super, Superuser)
	}
	if fsync != "off" || maxConns != 300 || encoding != "UTF8" {
		t.Errorf("fsync=%s max_connections=%d encoding=%s, want off 300 UTF8", fsync, maxConns, encoding)
	}

	// Listening on loopback TCP only.
	var addr string
	if err := conn.QueryRow(ctx, "SELECT current_setting('listen_addresses')").Scan(&addr); err != nil {
		t.Fatal(err)
	}
	if addr != "127.0.0.1" {
		t.Errorf("listen_addresses = %q, want 127.0.0.1", addr)
	}

	dir, pid := s.Dir(), s.cmd.Process.Pid
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temp dir %s still exists after Stop (stat err %v)", dir, err)
	}
	if processAlive(pid) {
		t.Errorf("postmaster %d still alive after Stop", pid)
	}
	if err := s.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if _, err := pgx.Connect(ctx, s.URL("postgres")+"&connect_timeout=2"); err == nil {
		t.Error("connected to a stopped server")
	}
}

func TestStartDirReusesCluster(t *testing.T) {
	t.Parallel()
	// Not t.TempDir: its 0700 parent would keep the postgres OS user out when we run as root.
	dir, err := os.MkdirTemp("", "pglocal-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ctx := context.Background()

	s := startServer(t, Options{Dir: dir})
	conn := connect(t, s.URL("postgres"))
	if _, err := conn.Exec(ctx, "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "PG_VERSION")); err != nil {
		t.Fatalf("Stop removed a caller-provided dir: %v", err)
	}

	s2 := startServer(t, Options{Dir: dir})
	var v int
	if err := connect(t, s2.URL("postgres")).QueryRow(ctx, "SELECT v FROM kept").Scan(&v); err != nil {
		t.Fatalf("data did not survive a restart: %v", err)
	}
	if v != 42 {
		t.Errorf("kept.v = %d, want 42", v)
	}
}

func TestStartPortTaken(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Start(ctx, Options{Port: port})
	if err == nil {
		s.Stop()
		t.Fatal("Start succeeded on a taken port")
	}
	if !errors.Is(err, errExited) {
		t.Fatalf("Start error = %v, want errExited", err)
	}
	// The error carries the server's own explanation; the temp dir is gone.
	if !strings.Contains(err.Error(), "server log") {
		t.Errorf("error lacks the server log tail: %v", err)
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), tempPrefix+"*"))
	for _, d := range dirs {
		if b, _ := os.ReadFile(filepath.Join(d, "postgres.log")); strings.Contains(string(b), strconv.Itoa(port)) {
			t.Errorf("failed start left %s behind", d)
		}
	}
}

// TestCrashedParentStopsServer proves a test binary that dies without calling Stop does not
// leave postgres running: a child process starts a server and is SIGKILLed; the postmaster must
// follow it, and the next Start sweeps the leftover directory.
func TestCrashedParentStopsServer(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperStartAndHang$")
	cmd.Env = append(os.Environ(), "PGLOCAL_HELPER=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pid int
	var dir string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if _, err := fmt.Sscanf(sc.Text(), "READY %d %s", &pid, &dir); err == nil {
			break
		}
	}
	if pid == 0 {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper did not report a server (scan err %v)", sc.Err())
	}
	if !processAlive(pid) {
		t.Fatalf("postmaster %d not running before the crash", pid)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()

	// Poll with a deadline: the kernel delivers the parent-death signal at once, but the
	// immediate shutdown takes a moment.
	deadline := time.Now().Add(30 * time.Second)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(-pid, syscall.SIGKILL)
			t.Fatalf("postmaster %d survived its parent", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A zombie would still answer kill(0); the postmaster is reparented to init, which reaps it.

	sweepStale(nil)
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("sweep left %s behind (stat err %v)", dir, err)
	}
}

// TestHelperStartAndHang is the child process of TestCrashedParentStopsServer.
func TestHelperStartAndHang(t *testing.T) {
	if os.Getenv("PGLOCAL_HELPER") != "1" {
		t.Skip("helper process only")
	}
	s, err := Start(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("READY %d %s\n", s.cmd.Process.Pid, s.Dir())
	select {} // wait to be killed
}

func TestCompareVersions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		a, b string
		want int // sign
	}{
		{"15", "9.6", 1},
		{"9.6", "15", -1},
		{"16", "16", 0},
		{"10", "9", 1},
		{"9.6", "9.5", 1},
	}
	for _, tt := range tests {
		got := compareVersions(tt.a, tt.b)
		if (got > 0) != (tt.want > 0) || (got < 0) != (tt.want < 0) {
			t.Errorf("compareVersions(%q, %q) = %d, want sign %d", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestBinDir(t *testing.T) {
	t.Parallel()
	dir, err := BinDir()
	if err != nil {
		t.Fatalf("BinDir: %v", err)
	}
	if !hasServerBinaries(dir) {
		t.Errorf("BinDir() = %s without initdb and postgres", dir)
	}
}
