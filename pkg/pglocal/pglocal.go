// Package pglocal starts a throwaway PostgreSQL server from the binaries installed on the
// machine (initdb + postgres), listening on loopback TCP with trust authentication. Tests use it
// for a real database, and `bulkhead run` uses it when no database URL is configured.
//
// The server is tuned for speed, not durability (fsync, synchronous_commit and full_page_writes
// off): never point it at data you want to keep.
//
// PostgreSQL refuses to run as root. When the calling process is root, pglocal runs initdb and
// postgres as the `postgres` OS user and hands it the data directory; otherwise it runs them as
// the calling user.
package pglocal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// ErrNoBinaries means no PostgreSQL server binaries were found on the machine.
var ErrNoBinaries = errors.New("pglocal: PostgreSQL server binaries (initdb, postgres) not found: install PostgreSQL (e.g. apt-get install postgresql) or put pg_config on PATH")

// Superuser is the name of the superuser role initdb creates.
const Superuser = "postgres"

// readyTimeout bounds how long Start waits for a fresh server to accept connections. A cold
// start takes well under a second here; the margin is for loaded CI machines.
const readyTimeout = 30 * time.Second

// stopTimeout bounds a fast shutdown before Stop kills the process group.
const stopTimeout = 10 * time.Second

// Options configures Start.
type Options struct {
	// Dir holds the cluster: the data directory (Dir/data), the Unix socket and the server log.
	// A cluster already initialized there is reused, so `bulkhead run` keeps its data across
	// restarts. Empty means a new temporary directory that Stop removes.
	Dir string
	// Port is the loopback TCP port to listen on; 0 picks a free one.
	Port int
	// Logger receives start/stop events; nil discards them.
	Logger *slog.Logger
}

// Server is a running PostgreSQL server. Stop it when done.
type Server struct {
	dir       string
	removeDir bool
	port      int
	logPath   string
	logger    *slog.Logger
	cmd       *exec.Cmd
	exited    chan struct{} // closed when the postmaster has exited
	waitErr   error         // set before exited is closed

	stopOnce sync.Once
	stopErr  error
}

// BinDir returns the directory holding initdb and postgres: `pg_config --bindir` when pg_config
// is on PATH, else the highest version under /usr/lib/postgresql/*/bin (Debian's layout, where
// the server binaries are not on PATH).
func BinDir() (string, error) {
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := strings.TrimSpace(string(out))
		if hasServerBinaries(dir) {
			return dir, nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	// Sort by numeric version so 15 beats 9.6.
	slices.SortFunc(matches, func(a, b string) int {
		return compareVersions(filepath.Base(filepath.Dir(a)), filepath.Base(filepath.Dir(b)))
	})
	for i := len(matches) - 1; i >= 0; i-- {
		if hasServerBinaries(matches[i]) {
			return matches[i], nil
		}
	}
	return "", ErrNoBinaries
}

func hasServerBinaries(dir string) bool {
	for _, name := range []string{"initdb", "postgres"} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.IsDir() {
			return false
		}
	}
	return true
}

// compareVersions orders dotted numeric versions ("9.6" < "15"); non-numeric parts compare as 0.
func compareVersions(a, b string) int {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := range max(len(pa), len(pb)) {
		var x, y int
		if i < len(pa) {
			x, _ = strconv.Atoi(pa[i])
		}
		if i < len(pb) {
			y, _ = strconv.Atoi(pb[i])
		}
		if x != y {
			return x - y
		}
	}
	return 0
}

// Start initializes (if needed) and starts a PostgreSQL server and returns once it accepts
// connections. ctx bounds the start only: the server keeps running until Stop.
func Start(ctx context.Context, opts Options) (*Server, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	cred, err := runAs()
	if err != nil {
		return nil, err
	}

	s := &Server{dir: opts.Dir, logger: logger}
	if s.dir == "" {
		sweepStale(logger)
		s.dir, err = os.MkdirTemp("", tempPrefix)
		if err != nil {
			return nil, fmt.Errorf("pglocal: create temp dir: %w", err)
		}
		s.removeDir = true
		if err := os.WriteFile(filepath.Join(s.dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			s.cleanupDir()
			return nil, fmt.Errorf("pglocal: %w", err)
		}
	} else if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("pglocal: create dir: %w", err)
	}
	if err := s.start(ctx, bin, cred, opts.Port); err != nil {
		s.cleanupDir()
		return nil, err
	}
	return s, nil
}

func (s *Server) start(ctx context.Context, bin string, cred *syscall.Credential, port int) error {
	if err := chownTo(s.dir, cred); err != nil {
		return err
	}
	dataDir := filepath.Join(s.dir, "data")
	if _, err := os.Stat(filepath.Join(dataDir, "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		start := time.Now()
		if err := s.initdb(ctx, bin, cred, dataDir); err != nil {
			return err
		}
		s.logger.Debug("pglocal: initdb done", "dir", dataDir, "took", time.Since(start))
	} else if err != nil {
		return fmt.Errorf("pglocal: %w", err)
	}

	// A free port found by listening and closing can be taken by someone else before postgres
	// binds it; retry with another one when we chose it.
	attempts := 1
	if port == 0 {
		attempts = 3
	}
	var lastErr error
	for range attempts {
		p := port
		if p == 0 {
			var err error
			if p, err = freePort(); err != nil {
				return err
			}
		}
		lastErr = s.launch(ctx, bin, cred, dataDir, p)
		if lastErr == nil {
			return nil
		}
		if !errors.Is(lastErr, errExited) || ctx.Err() != nil {
			break
		}
	}
	return lastErr
}

func (s *Server) initdb(ctx context.Context, bin string, cred *syscall.Credential, dataDir string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "initdb"),
		"-D", dataDir,
		"--auth=trust",
		"-U", Superuser,
		"--encoding=UTF8",
		// C collation: deterministic byte-order sorting on every machine, and the fastest.
		"--locale=C",
		"--no-sync",
		"--no-instructions",
	)
	cmd.Dir = s.dir
	cmd.SysProcAttr = sysProcAttr(cred)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		if cred != nil && errors.Is(err, os.ErrPermission) {
			return fmt.Errorf("pglocal: initdb: %w (the postgres OS user must be able to reach %s: every parent directory needs o+x)", err, s.dir)
		}
		return fmt.Errorf("pglocal: initdb: %w\n%s", err, tail(out.Bytes(), 20))
	}
	return nil
}

// errExited marks a postmaster that exited while starting (port taken, bad config…).
var errExited = errors.New("pglocal: postgres exited during start")

func (s *Server) launch(ctx context.Context, bin string, cred *syscall.Credential, dataDir string, port int) error {
	sockDir := filepath.Join(s.dir, "sock")
	if err := os.MkdirAll(sockDir, 0o700); err != nil {
		return fmt.Errorf("pglocal: %w", err)
	}
	if err := chownTo(sockDir, cred); err != nil {
		return err
	}
	s.logPath = filepath.Join(s.dir, "postgres.log")
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pglocal: open server log: %w", err)
	}
	defer logFile.Close() // the child holds its own copy of the descriptor

	// Not CommandContext: ctx bounds the start, while the server must outlive it.
	cmd := exec.Command(filepath.Join(bin, "postgres"),
		"-D", dataDir,
		"-p", strconv.Itoa(port),
		"-k", sockDir,
		"-c", "listen_addresses=127.0.0.1",
		// Durability off: this server holds test and demo data only.
		"-c", "fsync=off",
		"-c", "synchronous_commit=off",
		"-c", "full_page_writes=off",
		// Parallel test packages each open pools; 100 (the default) runs out.
		"-c", "max_connections=300",
	)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = sysProcAttr(cred)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pglocal: start postgres: %w", err)
	}
	s.cmd = cmd
	s.port = port
	s.exited = make(chan struct{})
	go func() {
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()

	if err := s.waitReady(ctx); err != nil {
		s.kill()
		return fmt.Errorf("%w\n--- server log (%s) ---\n%s", err, s.logPath, s.logTail(30))
	}
	s.logger.Info("pglocal: postgres started", "port", port, "dir", s.dir, "pid", cmd.Process.Pid)
	return nil
}

// waitReady polls with a real connection until the server answers, the postmaster exits, or
// the deadline passes. A connection is the only reliable signal: the pid file and the log
// line both appear before the server accepts queries during recovery.
func (s *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	// Abort a connection attempt in flight as soon as the postmaster dies, instead of waiting
	// out connect_timeout against whatever else answers on the port.
	ctx, abort := context.WithCancelCause(ctx)
	defer abort(nil)
	go func() {
		select {
		case <-s.exited:
			abort(fmt.Errorf("%w: %v", errExited, s.waitErr))
		case <-ctx.Done():
		}
	}()
	cfg, err := pgconn.ParseConfig(s.URL("postgres") + "&connect_timeout=2")
	if err != nil {
		return fmt.Errorf("pglocal: %w", err)
	}
	ticker := time.NewTicker(20 * time.Millisecond)
	defer ticker.Stop()
	for {
		conn, err := pgconn.ConnectConfig(ctx, cfg)
		if err == nil {
			return conn.Close(ctx)
		}
		select {
		case <-ctx.Done():
			if cause := context.Cause(ctx); errors.Is(cause, errExited) {
				return cause
			}
			return fmt.Errorf("pglocal: postgres not ready: %w (last error: %v)", context.Cause(ctx), err)
		case <-ticker.C:
		}
	}
}

// URL returns the superuser connection URL for database db (for example "postgres").
func (s *Server) URL(db string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(Superuser),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Port returns the TCP port the server listens on.
func (s *Server) Port() int { return s.port }

// Dir returns the directory holding the cluster, its socket and its log.
func (s *Server) Dir() string { return s.dir }

// Stop shuts the server down (fast shutdown: open sessions are terminated), kills whatever is
// left of its process group, and removes the directory when Start created it. It is safe to
// call more than once.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		s.stopErr = s.stop()
	})
	return s.stopErr
}

func (s *Server) stop() error {
	var err error
	if s.cmd != nil {
		// SIGINT is PostgreSQL's "fast" shutdown: roll back sessions, checkpoint, exit.
		_ = s.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-s.exited:
		case <-time.After(stopTimeout):
			err = fmt.Errorf("pglocal: postgres did not stop within %s; killed", stopTimeout)
		}
		s.kill()
		s.logger.Info("pglocal: postgres stopped", "port", s.port)
	}
	if rmErr := s.cleanupDir(); rmErr != nil && err == nil {
		err = rmErr
	}
	return err
}

// kill SIGKILLs the postmaster's whole process group (backends, checkpointer…), so nothing
// outlives Stop even when the postmaster hung, then reaps the postmaster.
func (s *Server) kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.exited
}

func (s *Server) cleanupDir() error {
	if !s.removeDir {
		return nil
	}
	if err := os.RemoveAll(s.dir); err != nil {
		return fmt.Errorf("pglocal: remove %s: %w", s.dir, err)
	}
	return nil
}

func (s *Server) logTail(lines int) string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read server log: %v)", err)
	}
	return tail(b, lines)
}

func tail(b []byte, lines int) string {
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// runAs returns the credential to run the server binaries with: the postgres OS user when we
// are root (initdb and postgres refuse to run as root), nil (ourselves) otherwise.
func runAs() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pglocal: running as root needs a `postgres` OS user to run the server as: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pglocal: postgres uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pglocal: postgres gid %q: %w", u.Gid, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func chownTo(path string, cred *syscall.Credential) error {
	if cred == nil {
		return nil
	}
	if err := os.Chown(path, int(cred.Uid), int(cred.Gid)); err != nil {
		return fmt.Errorf("pglocal: hand %s to the postgres user: %w", path, err)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pglocal: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tempPrefix names the temporary directories Start creates, so a later Start can find the ones
// a crashed process left behind.
const tempPrefix = "pglocal-"

// ownerFile records the pid of the process that created a temporary cluster directory.
const ownerFile = "owner.pid"

// sweepStale removes temporary cluster directories whose creating process is gone. The
// postmaster of such a directory has already died with its parent (see sysProcAttr), but its
// files stay behind; without this sweep every crashed test run would leak one.
func sweepStale(logger *slog.Logger) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), tempPrefix+"*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue // not ours, or being created right now
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || processAlive(pid) || postmasterAlive(dir) {
			continue
		}
		if err := os.RemoveAll(dir); err == nil {
			logger.Debug("pglocal: removed stale cluster", "dir", dir)
		}
	}
}

// processAlive reports whether pid runs. A zombie does not count: in a container whose init
// does not reap, a dead postmaster stays a zombie forever.
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	if err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// Format: "pid (comm) state ..."; comm may contain spaces and parentheses.
		if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
			return false
		}
	}
	return true
}

func postmasterAlive(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "data", "postmaster.pid"))
	if err != nil {
		return false
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	return err == nil && pid > 0 && processAlive(pid)
}
