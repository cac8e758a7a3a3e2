package seal_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/bulkhead/bulkhead/services/sync/internal/seal"
)

// The broker round trip (sealed at rest, opened for readers, shredded with the tenant) is
// tested against a real vault-broker in launch (TestSensitiveFieldsSealed); these are the cases
// that must not reach a broker at all.
func TestWithoutBroker(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		run     func() ([]byte, error)
		want    string
		wantErr error
	}{
		{"no sensitive field present: unchanged, no call", func() ([]byte, error) {
			return seal.Seal(ctx, nil, "t", []string{"email", "a.b"}, []byte(`{"id":"1","a":{"c":2}}`))
		}, `{"id":"1","a":{"c":2}}`, nil},
		{"a sensitive value and no broker: refused, never stored in clear", func() ([]byte, error) {
			return seal.Seal(ctx, nil, "t", []string{"a.b"}, []byte(`{"id":"1","a":{"b":"secret"}}`))
		}, "", seal.ErrNoCipher},
		{"a provider field named like the sealed field", func() ([]byte, error) {
			return seal.Seal(ctx, nil, "t", []string{"email"}, []byte(`{"id":"1","_bulkhead_sealed":"x"}`))
		}, "", seal.ErrReservedField},
		{"open a record without sealed values: unchanged", func() ([]byte, error) {
			return seal.Open(ctx, nil, "t", []byte(`{"id":"1"}`))
		}, `{"id":"1"}`, nil},
		{"open a sealed record without a broker", func() ([]byte, error) {
			return seal.Open(ctx, nil, "t", []byte(`{"id":"1","_bulkhead_sealed":"vault:v1:x"}`))
		}, "", seal.ErrNoCipher},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.run()
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if err == nil && string(got) != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}

// TestHashIsKeyed: the same plaintext hashes alike under one key (stable change detection) and
// differently under another (a table reader without the key cannot test guesses).
func TestHashIsKeyed(t *testing.T) {
	p := []byte(`{"email":"a@b.example","id":"1"}`)
	k1, k2 := bytes.Repeat([]byte("1"), 32), bytes.Repeat([]byte("2"), 32)
	if !bytes.Equal(seal.Hash(k1, p), seal.Hash(k1, p)) {
		t.Fatal("hash is not stable")
	}
	if bytes.Equal(seal.Hash(k1, p), seal.Hash(k2, p)) {
		t.Fatal("hash does not depend on the key")
	}
}
