package vault_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/bulkhead/bulkhead/pkg/vaultlocal"
	"github.com/bulkhead/bulkhead/services/vaultbroker/internal/vault"
)

// TestShippedPolicyFiles keeps deploy/vault/*.hcl identical to what Bootstrap writes, so the
// file an operator installs is the one the provisioner tests run with. Regenerate with
// BULKHEAD_UPDATE_POLICY_FILES=1 go test -run TestShippedPolicyFiles.
func TestShippedPolicyFiles(t *testing.T) {
	root, err := vaultlocal.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		file string
		mode vault.Mode
	}{
		{"provisioner.hcl", vault.ModeMount},
		{"provisioner-namespace.hcl", vault.ModeNamespace},
	} {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join(root, "deploy", "vault", tc.file)
			want := vault.ProvisionerPolicy(tc.mode)
			if os.Getenv("BULKHEAD_UPDATE_POLICY_FILES") == "1" {
				if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != want {
				t.Errorf("%s differs from vault.ProvisionerPolicy(%q); regenerate with BULKHEAD_UPDATE_POLICY_FILES=1", path, tc.mode)
			}
		})
	}
}
