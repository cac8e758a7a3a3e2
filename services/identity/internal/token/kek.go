package token

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
)

// KEKSize is the length of a key-encryption key: AES-256.
const KEKSize = 32

// ErrUnseal means a sealed private key could not be opened: the KEK is not the one it was
// sealed with, or the sealed bytes (or the kid they are bound to) were altered.
var ErrUnseal = errors.New("token: sealed signing key cannot be opened with this key-encryption key")

// KEK is the key-encryption key that seals signing keys at rest (AES-256-GCM). Every identity
// replica must be configured with the same KEK. Its String and LogValue never show the key.
type KEK struct {
	aead      cipher.AEAD
	ephemeral bool
}

// ParseKEK decodes a base64 (standard or URL alphabet, padded or not) 32-byte key, as
// configured in production.
func ParseKEK(encoded string) (KEK, error) {
	encoded = strings.TrimSpace(encoded)
	var raw []byte
	var err error
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if raw, err = enc.DecodeString(encoded); err == nil {
			break
		}
	}
	if err != nil {
		return KEK{}, errors.New("token: key-encryption key is not base64")
	}
	if len(raw) != KEKSize {
		return KEK{}, fmt.Errorf("token: key-encryption key is %d bytes, want %d", len(raw), KEKSize)
	}
	return newKEK(raw, false)
}

// GenerateDevKEK returns a random KEK for development and logs a warning: keys sealed with it
// cannot be opened after a restart, so every start makes a new signing key current and tokens
// signed before the restart stop verifying. A key ring with such a KEK must be the only
// replica.
func GenerateDevKEK(logger *slog.Logger) (KEK, error) {
	raw := make([]byte, KEKSize)
	if _, err := rand.Read(raw); err != nil {
		return KEK{}, fmt.Errorf("token: generate key-encryption key: %w", err)
	}
	if logger != nil {
		logger.Warn("token: no key-encryption key configured; generated a random one for development. " +
			"Signing keys will not survive a restart, and neither will the tokens they signed. " +
			"Configure a 32-byte base64 key in production.")
	}
	return newKEK(raw, true)
}

func newKEK(raw []byte, ephemeral bool) (KEK, error) {
	block, err := aes.NewCipher(raw)
	if err != nil {
		return KEK{}, fmt.Errorf("token: key-encryption key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return KEK{}, fmt.Errorf("token: key-encryption key: %w", err)
	}
	return KEK{aead: aead, ephemeral: ephemeral}, nil
}

// Ephemeral reports whether k was generated for development (GenerateDevKEK).
func (k KEK) Ephemeral() bool { return k.ephemeral }

// String hides the key from fmt and config dumps.
func (k KEK) String() string { return "[redacted]" }

// GoString hides the key from %#v, which would otherwise print the cipher's key schedule.
func (k KEK) GoString() string { return "token.KEK{[redacted]}" }

// LogValue hides the key from log/slog.
func (k KEK) LogValue() slog.Value { return slog.StringValue("[redacted]") }

func (k KEK) valid() bool { return k.aead != nil }

// sealVersion prefixes every sealed key so the format can change without guessing.
const sealVersion byte = 1

// sealAAD binds a sealed key to its kid: a sealed blob copied onto another row does not open.
func sealAAD(kid string) []byte { return []byte("bulkhead.signing_key.v1:" + kid) }

// seal encrypts an Ed25519 seed as version || nonce || ciphertext+tag.
func (k KEK) seal(kid string, seed []byte) ([]byte, error) {
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("token: seal: %w", err)
	}
	out := make([]byte, 0, 1+len(nonce)+len(seed)+k.aead.Overhead())
	out = append(out, sealVersion)
	out = append(out, nonce...)
	return k.aead.Seal(out, nonce, seed, sealAAD(kid)), nil
}

// open reverses seal; any mismatch (KEK, kid, bytes) returns ErrUnseal.
func (k KEK) open(kid string, sealed []byte) ([]byte, error) {
	ns := k.aead.NonceSize()
	if len(sealed) < 1+ns+k.aead.Overhead() || sealed[0] != sealVersion {
		return nil, fmt.Errorf("%w: malformed sealed key", ErrUnseal)
	}
	seed, err := k.aead.Open(nil, sealed[1:1+ns], sealed[1+ns:], sealAAD(kid))
	if err != nil {
		return nil, ErrUnseal
	}
	return seed, nil
}
