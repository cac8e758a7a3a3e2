package server_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	brokerv1 "github.com/bulkhead/bulkhead/gen/bulkhead/vaultbroker/v1"
)

// TestCredentialsEndToEnd drives every operation over loopback gRPC, through the full
// interceptor chain, as the connection service acting for a tenant's owner: identity issues
// every token, the broker exchanges the caller's token for the tenant's Vault identity, Vault
// stores and encrypts.
func TestCredentialsEndToEnd(t *testing.T) {
	f := newFixture(t)
	ctx := f.asA(t)
	id := newID()
	v1 := map[string]string{"access_token": "at-one", "refresh_token": "rt-one"}
	v2 := map[string]string{"access_token": "at-two", "refresh_token": "rt-two"}

	steps := []struct {
		name string
		run  func() error
		want codes.Code
	}{
		{"create with expected version 0", func() error {
			if got := f.put(t, ctx, f.a.ID, id, v1, 0); got != 1 {
				t.Errorf("version = %d, want 1", got)
			}
			return nil
		}, codes.OK},
		{"create again with 0 loses", func() error {
			_, err := f.conn.PutCredential(ctx, &brokerv1.PutCredentialRequest{TenantId: f.a.ID, ConnectionId: id, Data: v2})
			return err
		}, codes.Aborted},
		{"replace version 1", func() error {
			if got := f.put(t, ctx, f.a.ID, id, v2, 1); got != 2 {
				t.Errorf("version = %d, want 2", got)
			}
			return nil
		}, codes.OK},
		{"stale expected version", func() error {
			_, err := f.conn.PutCredential(ctx, &brokerv1.PutCredentialRequest{TenantId: f.a.ID, ConnectionId: id, Data: v1, ExpectedVersion: 1})
			return err
		}, codes.Aborted},
		{"read latest", func() error {
			resp, err := f.conn.GetCredential(ctx, &brokerv1.GetCredentialRequest{TenantId: f.a.ID, ConnectionId: id})
			if err == nil && (resp.GetVersion() != 2 || resp.GetData()["access_token"] != "at-two" || resp.GetCreateTime() == nil) {
				t.Errorf("GetCredential = %v", resp)
			}
			return err
		}, codes.OK},
		{"read version 1, as the sync service", func() error {
			resp, err := f.sync.GetCredential(ctx, &brokerv1.GetCredentialRequest{TenantId: f.a.ID, ConnectionId: id, Version: 1})
			if err == nil && (resp.GetVersion() != 1 || resp.GetData()["refresh_token"] != "rt-one") {
				t.Errorf("GetCredential(version 1) = %v", resp)
			}
			return err
		}, codes.OK},
		{"read a version that never existed", func() error {
			_, err := f.conn.GetCredential(ctx, &brokerv1.GetCredentialRequest{TenantId: f.a.ID, ConnectionId: id, Version: 9})
			return err
		}, codes.NotFound},
		{"list versions", func() error {
			resp, err := f.sync.ListCredentialVersions(ctx, &brokerv1.ListCredentialVersionsRequest{TenantId: f.a.ID, ConnectionId: id})
			if err == nil && (resp.GetCurrentVersion() != 2 || len(resp.GetVersions()) != 2 || resp.GetVersions()[0].GetVersion() != 1) {
				t.Errorf("ListCredentialVersions = %v", resp)
			}
			return err
		}, codes.OK},
		{"the sync service may not write", func() error {
			_, err := f.sync.PutCredential(ctx, &brokerv1.PutCredentialRequest{TenantId: f.a.ID, ConnectionId: id, Data: v1, ExpectedVersion: 2})
			return err
		}, codes.PermissionDenied},
		{"the sync service may encrypt (sensitive record fields) and decrypt what it sealed", func() error {
			enc, err := f.sync.Encrypt(ctx, &brokerv1.EncryptRequest{TenantId: f.a.ID, Plaintext: []byte("sealed by sync")})
			if err != nil {
				return err
			}
			dec, err := f.sync.Decrypt(ctx, &brokerv1.DecryptRequest{TenantId: f.a.ID, Ciphertext: enc.GetCiphertext()})
			if err == nil && string(dec.GetPlaintext()) != "sealed by sync" {
				t.Errorf("Decrypt = %q", dec.GetPlaintext())
			}
			return err
		}, codes.OK},
		{"the sync service may not rotate the key", func() error {
			_, err := f.sync.RotateKey(ctx, &brokerv1.RotateKeyRequest{TenantId: f.a.ID})
			return err
		}, codes.PermissionDenied},
		{"the sync service may not delete", func() error {
			_, err := f.sync.DeleteCredential(ctx, &brokerv1.DeleteCredentialRequest{TenantId: f.a.ID, ConnectionId: id})
			return err
		}, codes.PermissionDenied},
		{"oversized credential", func() error {
			big := map[string]string{}
			for i := range 17 {
				big["k"+string(rune('a'+i))] = strings.Repeat("x", 4000)
			}
			_, err := f.conn.PutCredential(ctx, &brokerv1.PutCredentialRequest{TenantId: f.a.ID, ConnectionId: newID(), Data: big})
			return err
		}, codes.InvalidArgument},
		{"connection id that is not a UUID", func() error {
			_, err := f.conn.GetCredential(ctx, &brokerv1.GetCredentialRequest{TenantId: f.a.ID, ConnectionId: "not_a_uuid"})
			return err
		}, codes.InvalidArgument},
		{"missing credential", func() error {
			_, err := f.conn.GetCredential(ctx, &brokerv1.GetCredentialRequest{TenantId: f.a.ID, ConnectionId: newID()})
			return err
		}, codes.NotFound},
		{"delete", func() error {
			_, err := f.conn.DeleteCredential(ctx, &brokerv1.DeleteCredentialRequest{TenantId: f.a.ID, ConnectionId: id})
			return err
		}, codes.OK},
		{"delete again is a no-op", func() error {
			_, err := f.conn.DeleteCredential(ctx, &brokerv1.DeleteCredentialRequest{TenantId: f.a.ID, ConnectionId: id})
			return err
		}, codes.OK},
		{"read after delete", func() error {
			_, err := f.conn.GetCredential(ctx, &brokerv1.GetCredentialRequest{TenantId: f.a.ID, ConnectionId: id})
			return err
		}, codes.NotFound},
		{"versions after delete", func() error {
			_, err := f.conn.ListCredentialVersions(ctx, &brokerv1.ListCredentialVersionsRequest{TenantId: f.a.ID, ConnectionId: id})
			return err
		}, codes.NotFound},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) { wantCode(t, s.run(), s.want) })
	}
}

// TestTransitEndToEnd encrypts, rotates and decrypts with the tenant's own key, and shows that
// one tenant's ciphertext is not another's.
func TestTransitEndToEnd(t *testing.T) {
	f := newFixture(t)
	ctx := f.asA(t)
	enc, err := f.conn.Encrypt(ctx, &brokerv1.EncryptRequest{TenantId: f.a.ID, Plaintext: []byte("row secret")})
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	if !strings.HasPrefix(enc.GetCiphertext(), "vault:v1:") {
		t.Fatalf("ciphertext %q, want vault:v1:…", enc.GetCiphertext())
	}
	rot, err := f.conn.RotateKey(ctx, &brokerv1.RotateKeyRequest{TenantId: f.a.ID})
	if err != nil || rot.GetLatestVersion() != 2 {
		t.Fatalf("RotateKey = %v, %v; want latest version 2", rot, err)
	}
	enc2, err := f.conn.Encrypt(ctx, &brokerv1.EncryptRequest{TenantId: f.a.ID, Plaintext: []byte("newer")})
	if err != nil || !strings.HasPrefix(enc2.GetCiphertext(), "vault:v2:") {
		t.Fatalf("Encrypt after rotation = %v, %v; want vault:v2:…", enc2, err)
	}
	cases := []struct {
		name       string
		client     brokerv1.BrokerServiceClient
		asB        bool
		tenant     string
		ciphertext string
		want       codes.Code
		plaintext  string
	}{
		{"old ciphertext after rotation, by sync", f.sync, false, f.a.ID, enc.GetCiphertext(), codes.OK, "row secret"},
		{"new ciphertext, by connection", f.conn, false, f.a.ID, enc2.GetCiphertext(), codes.OK, "newer"},
		{"A's ciphertext with B's key", f.conn, true, f.bt.ID, enc.GetCiphertext(), codes.InvalidArgument, ""},
		{"garbage", f.conn, false, f.a.ID, "vault:v1:bm90IGEgY2lwaGVydGV4dA==", codes.InvalidArgument, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cctx := ctx
			if tc.asB {
				cctx = f.asB(t)
			}
			resp, err := tc.client.Decrypt(cctx, &brokerv1.DecryptRequest{TenantId: tc.tenant, Ciphertext: tc.ciphertext})
			wantCode(t, err, tc.want)
			if string(resp.GetPlaintext()) != tc.plaintext {
				t.Fatalf("plaintext %q, want %q", resp.GetPlaintext(), tc.plaintext)
			}
		})
	}
	big := make([]byte, 64<<10+1)
	_, err = f.conn.Encrypt(ctx, &brokerv1.EncryptRequest{TenantId: f.a.ID, Plaintext: big})
	wantCode(t, err, codes.InvalidArgument)
}

// TestProvisioning: provisioning twice is a no-op; deprovisioning shreds — the credential is
// gone and a ciphertext made before can never be decrypted again, not even after the tenant is
// provisioned anew (a new key).
func TestProvisioning(t *testing.T) {
	f := newFixture(t)
	ctx := f.asA(t)
	prov := f.b.Client(t, "provisioner")
	// The provisioning service acts as itself: no tenant principal in its context.
	pctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	again, err := prov.ProvisionTenant(pctx, &brokerv1.ProvisionTenantRequest{TenantId: f.a.ID})
	if err != nil || !again.GetAlreadyProvisioned() || again.GetMode() != f.b.Mode {
		t.Fatalf("second ProvisionTenant = %v, %v; want already_provisioned in mode %s", again, err, f.b.Mode)
	}
	id := newID()
	f.put(t, ctx, f.a.ID, id, map[string]string{"api_key": "k-123"}, 0)
	enc, err := f.conn.Encrypt(ctx, &brokerv1.EncryptRequest{TenantId: f.a.ID, Plaintext: []byte("before shredding")})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // idempotent
		if _, err := prov.DeprovisionTenant(pctx, &brokerv1.DeprovisionTenantRequest{TenantId: f.a.ID}); err != nil {
			t.Fatalf("DeprovisionTenant: %v", err)
		}
	}
	_, err = f.conn.GetCredential(ctx, &brokerv1.GetCredentialRequest{TenantId: f.a.ID, ConnectionId: id})
	wantCode(t, err, codes.NotFound)
	_, err = f.conn.Decrypt(ctx, &brokerv1.DecryptRequest{TenantId: f.a.ID, Ciphertext: enc.GetCiphertext()})
	wantCode(t, err, codes.NotFound)

	// B is untouched.
	idB := newID()
	f.put(t, f.asB(t), f.bt.ID, idB, map[string]string{"api_key": "b"}, 0)

	first := f.b.Provision(t, f.a.ID)
	if first.GetAlreadyProvisioned() {
		t.Fatal("re-provisioning after deprovision reported already provisioned")
	}
	_, err = f.conn.GetCredential(ctx, &brokerv1.GetCredentialRequest{TenantId: f.a.ID, ConnectionId: id})
	wantCode(t, err, codes.NotFound)
	_, err = f.conn.Decrypt(ctx, &brokerv1.DecryptRequest{TenantId: f.a.ID, Ciphertext: enc.GetCiphertext()})
	wantCode(t, err, codes.InvalidArgument) // the new key cannot open the old ciphertext
}

// TestConcurrentCAS races writers over gRPC: for every version exactly one writer wins and
// every other gets ABORTED (re-read and retry).
func TestConcurrentCAS(t *testing.T) {
	f := newFixture(t)
	ctx := f.asA(t)
	id := newID()
	const writers, rounds = 6, 3
	expected := int64(0)
	for round := range rounds {
		codesSeen := make([]codes.Code, writers)
		versions := make([]int64, writers)
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				resp, err := f.conn.PutCredential(ctx, &brokerv1.PutCredentialRequest{
					TenantId: f.a.ID, ConnectionId: id, ExpectedVersion: expected,
					Data: map[string]string{"access_token": "writer", "round": string(rune('0' + round))},
				})
				codesSeen[w], versions[w] = status(err), resp.GetVersion()
			})
		}
		wg.Wait()
		won := 0
		for w, c := range codesSeen {
			switch c {
			case codes.OK:
				won++
				if versions[w] != expected+1 {
					t.Fatalf("round %d: winner wrote version %d, want %d", round, versions[w], expected+1)
				}
			case codes.Aborted:
			default:
				t.Fatalf("round %d: writer %d got %v, want OK or Aborted", round, w, c)
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d writers won (codes %v), want exactly 1", round, won, codesSeen)
		}
		expected++
	}
}
