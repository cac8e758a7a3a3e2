package vault_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/bulkhead/bulkhead/services/vaultbroker/internal/vault"
	"github.com/google/uuid"
)

func TestCredentialLifecycle(t *testing.T) {
	e := testEnv(t)
	ctx := context.Background()
	tenant := e.tenant(t)
	b := e.broker(t, nil)
	cred := uuid.NewString()

	v1, err := b.PutCredential(ctx, tenant, cred, map[string]string{"access_token": "a1", "refresh_token": "r1"}, 0)
	if err != nil || v1 != 1 {
		t.Fatalf("create: v%d, %v", v1, err)
	}
	v2, err := b.PutCredential(ctx, tenant, cred, map[string]string{"access_token": "a2", "refresh_token": "r1"}, 1)
	if err != nil || v2 != 2 {
		t.Fatalf("update: v%d, %v", v2, err)
	}
	got, err := b.GetCredential(ctx, tenant, cred, 0)
	if err != nil || got.Version != 2 || got.Data["access_token"] != "a2" || got.CreatedTime.IsZero() {
		t.Fatalf("get latest: %+v, %v", got, err)
	}
	old, err := b.GetCredential(ctx, tenant, cred, 1)
	if err != nil || old.Version != 1 || old.Data["access_token"] != "a1" {
		t.Fatalf("get v1: %+v, %v", old, err)
	}
	versions, err := b.ListCredentialVersions(ctx, tenant, cred)
	if err != nil || versions.Current != 2 || len(versions.Versions) != 2 || versions.Versions[0].Version != 1 || versions.Versions[1].Version != 2 {
		t.Fatalf("versions: %+v, %v", versions, err)
	}
	if err := b.DeleteCredential(ctx, tenant, cred); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if err := b.DeleteCredential(ctx, tenant, cred); err != nil {
		t.Fatalf("delete again (idempotent): %v", err)
	}
	// After delete, the id can be created afresh (check-and-set 0 again).
	if v, err := b.PutCredential(ctx, tenant, cred, map[string]string{"k": "v"}, 0); err != nil || v != 1 {
		t.Fatalf("re-create after delete: v%d, %v", v, err)
	}
}

// TestCredentialErrors checks the typed error of every refusal (codes, not messages).
func TestCredentialErrors(t *testing.T) {
	e := testEnv(t)
	ctx := context.Background()
	tenant := e.tenant(t)
	b := e.broker(t, func(c *vault.Config) { c.MaxSecretBytes = 1024 })
	existing := uuid.NewString()
	if _, err := b.PutCredential(ctx, tenant, existing, map[string]string{"k": "v"}, 0); err != nil {
		t.Fatal(err)
	}
	unprovisioned := uuid.NewString()

	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"create over existing (stale cas 0)", func() error {
			_, err := b.PutCredential(ctx, tenant, existing, map[string]string{"k": "x"}, 0)
			return err
		}, vault.ErrConflict},
		{"update with future version", func() error {
			_, err := b.PutCredential(ctx, tenant, existing, map[string]string{"k": "x"}, 7)
			return err
		}, vault.ErrConflict},
		{"too large", func() error {
			_, err := b.PutCredential(ctx, tenant, uuid.NewString(), map[string]string{"k": strings.Repeat("x", 2000)}, 0)
			return err
		}, vault.ErrTooLarge},
		{"too large is invalid argument", func() error {
			_, err := b.PutCredential(ctx, tenant, uuid.NewString(), map[string]string{"k": strings.Repeat("x", 2000)}, 0)
			return err
		}, vault.ErrInvalidArgument},
		{"empty data", func() error {
			_, err := b.PutCredential(ctx, tenant, uuid.NewString(), map[string]string{}, 0)
			return err
		}, vault.ErrInvalidArgument},
		{"negative version", func() error {
			_, err := b.PutCredential(ctx, tenant, uuid.NewString(), map[string]string{"k": "v"}, -1)
			return err
		}, vault.ErrInvalidArgument},
		{"credential id not a uuid", func() error { _, err := b.GetCredential(ctx, tenant, "../../sys/mounts", 0); return err }, vault.ErrInvalidArgument},
		{"credential id upper case", func() error {
			_, err := b.GetCredential(ctx, tenant, strings.ToUpper(uuid.NewString()), 0)
			return err
		}, vault.ErrInvalidArgument},
		{"tenant id not a uuid", func() error { _, err := b.GetCredential(ctx, "tenant-a", existing, 0); return err }, vault.ErrInvalidArgument},
		{"missing credential", func() error { _, err := b.GetCredential(ctx, tenant, uuid.NewString(), 0); return err }, vault.ErrNotFound},
		{"missing version", func() error { _, err := b.GetCredential(ctx, tenant, existing, 9); return err }, vault.ErrNotFound},
		{"versions of missing credential", func() error {
			_, err := b.ListCredentialVersions(ctx, tenant, uuid.NewString())
			return err
		}, vault.ErrNotFound},
		{"unprovisioned tenant", func() error { _, err := b.GetCredential(ctx, unprovisioned, existing, 0); return err }, vault.ErrTenantNotProvisioned},
		{"unprovisioned tenant is not found", func() error { _, err := b.GetCredential(ctx, unprovisioned, existing, 0); return err }, vault.ErrNotFound},
		{"empty plaintext", func() error { _, _, err := b.Encrypt(ctx, tenant, nil); return err }, vault.ErrInvalidArgument},
		{"plaintext too large", func() error { _, _, err := b.Encrypt(ctx, tenant, make([]byte, 1025)); return err }, vault.ErrTooLarge},
		{"garbage ciphertext", func() error { _, err := b.Decrypt(ctx, tenant, "vault:v1:AAAA"); return err }, vault.ErrInvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	// Nothing was written by the refused calls.
	got, err := b.GetCredential(ctx, tenant, existing, 0)
	if err != nil || got.Version != 1 || got.Data["k"] != "v" {
		t.Fatalf("existing credential changed: %+v, %v", got, err)
	}
}

// TestConcurrentCAS: N writers race to replace the same version; Vault's check-and-set lets
// exactly one win each round and every loser gets ErrConflict.
func TestConcurrentCAS(t *testing.T) {
	e := testEnv(t)
	ctx := context.Background()
	tenant := e.tenant(t)
	b := e.broker(t, nil)
	cred := uuid.NewString()
	if _, err := b.PutCredential(ctx, tenant, cred, map[string]string{"writer": "init"}, 0); err != nil {
		t.Fatal(err)
	}
	const writers, rounds = 8, 5
	current := 1
	for round := 0; round < rounds; round++ {
		var (
			wg              sync.WaitGroup
			mu              sync.Mutex
			wins, conflicts int
			winner          string
			unexpected      []error
		)
		start := make(chan struct{})
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				name := uuid.NewString()
				<-start
				_, err := b.PutCredential(ctx, tenant, cred, map[string]string{"writer": name}, current)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					wins++
					winner = name
				case errors.Is(err, vault.ErrConflict):
					conflicts++
				default:
					unexpected = append(unexpected, err)
				}
			}()
		}
		close(start)
		wg.Wait()
		if len(unexpected) > 0 || wins != 1 || conflicts != writers-1 {
			t.Fatalf("round %d: %d wins, %d conflicts, unexpected %v", round, wins, conflicts, unexpected)
		}
		current++
		got, err := b.GetCredential(ctx, tenant, cred, 0)
		if err != nil || got.Version != current || got.Data["writer"] != winner {
			t.Fatalf("round %d: stored %+v (%v), want v%d by the winner", round, got, err, current)
		}
	}
}

func TestTransit(t *testing.T) {
	e := testEnv(t)
	ctx := context.Background()
	tenantA, tenantB := e.tenant(t), e.tenant(t)
	b := e.broker(t, nil)
	plain := []byte("account 1234, token xyz")

	ct1, kv1, err := b.Encrypt(ctx, tenantA, plain)
	if err != nil || kv1 != 1 || !strings.HasPrefix(ct1, "vault:v1:") {
		t.Fatalf("encrypt: %q v%d, %v", ct1, kv1, err)
	}
	if got, err := b.Decrypt(ctx, tenantA, ct1); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("decrypt: %q, %v", got, err)
	}
	latest, err := b.RotateKey(ctx, tenantA)
	if err != nil || latest != 2 {
		t.Fatalf("rotate: %d, %v", latest, err)
	}
	ct2, kv2, err := b.Encrypt(ctx, tenantA, plain)
	if err != nil || kv2 != 2 || !strings.HasPrefix(ct2, "vault:v2:") {
		t.Fatalf("encrypt after rotate: %q v%d, %v", ct2, kv2, err)
	}
	for _, ct := range []string{ct1, ct2} {
		if got, err := b.Decrypt(ctx, tenantA, ct); err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("decrypt %s after rotate: %q, %v", ct[:9], got, err)
		}
	}
	// B's key cannot open A's ciphertext: B's own token, B's own key, A's bytes.
	if _, err := b.Decrypt(ctx, tenantB, ct1); !errors.Is(err, vault.ErrInvalidArgument) {
		t.Fatalf("decrypt A's ciphertext as B: %v, want ErrInvalidArgument", err)
	}
}
