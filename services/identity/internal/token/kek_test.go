package token

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestParseKEK(t *testing.T) {
	raw := make([]byte, KEKSize)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		s := enc.EncodeToString(raw)
		k, err := ParseKEK(" " + s + "\n")
		if err != nil {
			t.Fatalf("ParseKEK(%q): %v", s, err)
		}
		if k.Ephemeral() {
			t.Error("a configured KEK is ephemeral")
		}
	}
	for _, bad := range []string{"", "not base64!", base64.StdEncoding.EncodeToString(raw[:16]), base64.StdEncoding.EncodeToString(append(raw, 0))} {
		if _, err := ParseKEK(bad); err == nil {
			t.Errorf("ParseKEK(%q) accepted", bad)
		}
	}
}

func TestKEKNeverPrintsItself(t *testing.T) {
	raw := bytes.Repeat([]byte{0xAB}, KEKSize)
	k, err := ParseKEK(base64.StdEncoding.EncodeToString(raw))
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("config", "kek", k)
	for _, out := range []string{fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s", k, k, k, k), logs.String()} {
		if !strings.Contains(out, "redacted") || strings.Contains(strings.ToLower(out), "abab") {
			t.Errorf("KEK printed as %q", out)
		}
	}
}

func TestSealOpen(t *testing.T) {
	k1, err := GenerateDevKEK(nil)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := GenerateDevKEK(nil)
	if err != nil {
		t.Fatal(err)
	}
	seed := bytes.Repeat([]byte{7}, 32)
	sealed, err := k1.seal("kid-1", seed)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, seed) {
		t.Fatal("sealed bytes contain the seed")
	}
	got, err := k1.open("kid-1", sealed)
	if err != nil || !bytes.Equal(got, seed) {
		t.Fatalf("open = %x, %v", got, err)
	}
	again, err := k1.seal("kid-1", seed)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(again, sealed) {
		t.Fatal("two seals of one key are identical: nonce reused")
	}

	flipped := bytes.Clone(sealed)
	flipped[len(flipped)-1] ^= 1
	tests := []struct {
		name   string
		kek    KEK
		kid    string
		sealed []byte
	}{
		{"wrong KEK", k2, "kid-1", sealed},
		{"another row's kid", k1, "kid-2", sealed},
		{"flipped bit", k1, "kid-1", flipped},
		{"truncated", k1, "kid-1", sealed[:20]},
		{"unknown version", k1, "kid-1", append([]byte{9}, sealed[1:]...)},
		{"empty", k1, "kid-1", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := tt.kek.open(tt.kid, tt.sealed); !errors.Is(err, ErrUnseal) {
				t.Fatalf("open = %x, %v; want ErrUnseal", got, err)
			}
		})
	}
}
