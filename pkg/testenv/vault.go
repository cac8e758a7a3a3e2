package testenv

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/pkg/vaultlocal"
)

// vaultStartTimeout covers a first build of the Vault binary (≈12 min on a bare machine) plus
// start-up; later runs start in about 3 s.
const vaultStartTimeout = 20 * time.Minute

// sharedVault is the one Vault server of this test binary. It is process-wide on purpose:
// starting Vault per test would cost ~3 s each, and tests isolate themselves inside it by
// tenant (fresh UUIDs), which is exactly the isolation under test.
var sharedVault struct {
	mu   sync.Mutex
	srv  *vaultlocal.Server
	caps vaultlocal.Capabilities
	err  error
	done bool
}

// Vault returns this test binary's shared real Vault server, starting it on first use (see
// vaultlocal.Start for where it comes from). It fails the test if no server can be had: a fake
// Vault is never substituted. Stop it from TestMain with StopVault (or testenv's main runner).
func Vault(tb testing.TB) *vaultlocal.Server {
	tb.Helper()
	srv, _, err := vaultShared()
	if err != nil {
		tb.Fatalf("testenv: vault: %v", err)
	}
	return srv
}

// VaultCapabilities returns what the shared server supports, probed once with its root token.
func VaultCapabilities(tb testing.TB) vaultlocal.Capabilities {
	tb.Helper()
	_, caps, err := vaultShared()
	if err != nil {
		tb.Fatalf("testenv: vault: %v", err)
	}
	return caps
}

func vaultShared() (*vaultlocal.Server, vaultlocal.Capabilities, error) {
	sharedVault.mu.Lock()
	defer sharedVault.mu.Unlock()
	if sharedVault.done {
		return sharedVault.srv, sharedVault.caps, sharedVault.err
	}
	sharedVault.done = true
	ctx, cancel := context.WithTimeout(context.Background(), vaultStartTimeout)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := vaultlocal.Start(ctx, vaultlocal.Options{Logger: logger})
	if err != nil {
		sharedVault.err = err
		return nil, vaultlocal.Capabilities{}, err
	}
	caps, err := vaultlocal.Probe(ctx, srv.Addr(), srv.RootToken())
	if err != nil {
		_ = srv.Stop()
		sharedVault.err = err
		return nil, vaultlocal.Capabilities{}, err
	}
	sharedVault.srv, sharedVault.caps = srv, caps
	return srv, caps, nil
}

// StopVault stops the shared Vault server if this binary started one. Call it after m.Run in
// TestMain; it is a no-op when no test used Vault or when the server is external.
func StopVault() error {
	sharedVault.mu.Lock()
	defer sharedVault.mu.Unlock()
	if sharedVault.srv == nil {
		return nil
	}
	err := sharedVault.srv.Stop()
	sharedVault.srv = nil
	sharedVault.err = errStopped
	return err
}

var errStopped = errors.New("shared vault already stopped by StopVault")
