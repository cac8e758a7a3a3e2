package vaultlocal

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// The cache directory is named for VaultVersion, so the constant must follow the wrapper's
// pin: a bump of tools/vaultserver/go.mod alone would otherwise keep using the old binary.
func TestVaultVersionMatchesWrapper(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	mod, err := os.ReadFile(filepath.Join(root, wrapperDir, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^require github\.com/hashicorp/vault (v\S+)$`).FindSubmatch(mod)
	if m == nil {
		t.Fatalf("%s/go.mod has no single-line require of github.com/hashicorp/vault", wrapperDir)
	}
	if got := string(m[1]); got != VaultVersion {
		t.Fatalf("tools/vaultserver pins Vault %s, VaultVersion is %s", got, VaultVersion)
	}
}

func TestCachedBinaryPath(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(CacheDirEnv, dir)
	got, err := CachedBinaryPath()
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "vault-"+VaultVersion, "vault"); got != want {
		t.Fatalf("CachedBinaryPath = %s, want %s", got, want)
	}

	t.Setenv(CacheDirEnv, "")
	t.Setenv("XDG_CACHE_HOME", dir) // os.UserCacheDir on Linux
	got, err = CachedBinaryPath()
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "bulkhead", "vault-"+VaultVersion, "vault"); got != want {
		t.Fatalf("CachedBinaryPath = %s, want %s", got, want)
	}
}
