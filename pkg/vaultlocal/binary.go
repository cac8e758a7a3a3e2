package vaultlocal

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"
)

// CacheDirEnv names the environment variable that overrides where built tools are cached
// (default: the user cache directory's "bulkhead", e.g. ~/.cache/bulkhead). The Vault binary
// lives in <cache>/vault-<version>/vault, so every clone and CI job on a machine shares one
// build per Vault version, and a version bump builds next to the old binary, never over it.
const CacheDirEnv = "BULKHEAD_CACHE_DIR"

// VaultVersion is the HashiCorp Vault release tools/vaultserver pins; it names the cache
// directory of the build. A test keeps it equal to the wrapper's go.mod.
const VaultVersion = "v1.21.1"

// wrapperDir is the wrapper module, relative to the repository root, that builds HashiCorp
// Vault's own CLI from the Go module proxy.
const wrapperDir = "tools/vaultserver"

// FindBinary resolves the Vault server binary: a `vault` or `bao` on PATH, else the binary
// cached in CachedBinaryPath, building it from tools/vaultserver when it is missing. The first
// build on a bare machine takes about 12 minutes and 3.6 GB of module downloads; concurrent
// callers (parallel test binaries) wait for one build under a file lock instead of racing.
func FindBinary(ctx context.Context, logger *slog.Logger) (string, error) {
	if logger == nil {
		logger = slog.Default()
	}
	for _, name := range []string{"vault", "bao"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	bin, err := CachedBinaryPath()
	if err != nil {
		return "", fmt.Errorf("no vault or bao on PATH: %w", err)
	}
	if isExecutable(bin) {
		return bin, nil
	}
	root, rootErr := RepoRoot()
	if rootErr != nil {
		return "", fmt.Errorf("vault binary %s missing and cannot build it: %w", bin, rootErr)
	}
	if err := buildLocked(ctx, logger, filepath.Join(root, wrapperDir), bin); err != nil {
		return "", err
	}
	return bin, nil
}

// CachedBinaryPath is where the built Vault binary lives: <cache>/vault-<VaultVersion>/vault,
// with <cache> from BULKHEAD_CACHE_DIR or else os.UserCacheDir()/bulkhead. It is outside the
// checkout on purpose: a build costs minutes, and fresh clones and CI runs on one machine
// should find the one already made.
func CachedBinaryPath() (string, error) {
	cache := os.Getenv(CacheDirEnv)
	if cache == "" {
		dir, err := os.UserCacheDir()
		if err != nil {
			return "", fmt.Errorf("no user cache directory (set %s): %w", CacheDirEnv, err)
		}
		cache = filepath.Join(dir, "bulkhead")
	}
	return filepath.Join(cache, "vault-"+VaultVersion, "vault"), nil
}

// buildLocked builds the wrapper into bin unless another process finished doing so while this
// one waited for the lock.
func buildLocked(ctx context.Context, logger *slog.Logger, srcDir, bin string) error {
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return fmt.Errorf("create cache dir: %w", err)
	}
	unlock, err := lockFile(ctx, bin+".lock")
	if err != nil {
		return err
	}
	defer unlock()
	if isExecutable(bin) {
		return nil
	}
	// Build into a temporary name and rename, so a killed build never leaves a truncated binary
	// that the next run would mistake for a good one.
	tmp := fmt.Sprintf("%s.tmp-%d", bin, os.Getpid())
	defer os.Remove(tmp)
	cmd := exec.CommandContext(ctx, "go", "build", "-ldflags=-s -w", "-o", tmp, ".")
	cmd.Dir = srcDir
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if _, err := os.Stat(filepath.Join(srcDir, "go.sum")); errors.Is(err, fs.ErrNotExist) {
		// Without go.sum a plain build refuses to add checksums; -mod=mod lets the first build
		// resolve them (go mod tidy fails on test-only imports of Vault's dependencies).
		cmd.Env = append(cmd.Env, "GOFLAGS=-mod=mod")
	}
	logger.Info("building HashiCorp Vault from tools/vaultserver (first build on a bare machine ≈12 min; a vault on PATH or VAULT_ADDR+VAULT_TOKEN skips this)",
		"dir", srcDir, "output", bin)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("build vault in %s: %w\n%s", srcDir, err, tail(out, 4000))
	}
	if err := os.Rename(tmp, bin); err != nil {
		return fmt.Errorf("install vault binary: %w", err)
	}
	logger.Info("built vault", "output", bin, "took", time.Since(start).Round(time.Second))
	return nil
}

// RepoRoot finds the repository root: the nearest directory holding go.work, searched upwards
// from the working directory and then from this source file's directory (for binaries run
// from elsewhere in a checkout).
func RepoRoot() (string, error) {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		starts = append(starts, filepath.Dir(file))
	}
	for _, dir := range starts {
		for {
			if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
				return dir, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", errors.New("repository root (a directory holding go.work) not found; set " + CacheDirEnv)
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
