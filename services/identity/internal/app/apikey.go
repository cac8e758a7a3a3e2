package app

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/bulkhead/bulkhead/services/identity/internal/store"
)

// API keys look like
//
//	bhk_<tenant uuid, 32 hex>_<lookup id, 16 hex>_<secret, 32 random bytes base64url>
//
// The tenant inside the key is what lets IssueToken look the key up in that tenant's
// row-level-security scope: no query ever searches keys across tenants. The lookup id finds the
// row; the secret proves possession. Only SHA-256(whole key) is stored.
//
// A plain SHA-256 (not bcrypt/argon2) is enough because the secret is 256 random bits: slow
// hashes protect guessable passwords from offline guessing, and 2^256 guesses are out of reach
// however fast the hash. A fast hash keeps IssueToken cheap and constant-time comparable.
const (
	apiKeyPrefix    = "bhk_"
	lookupIDBytes   = 8
	secretBytes     = 32
	tenantHexLength = 32
)

// apiKeyMaterial is a freshly minted key: the secret to show once and what to store.
type apiKeyMaterial struct {
	secret string
	stored store.NewAPIKey
}

// newAPIKeyMaterial mints a key for tenantID, owned by userID or serviceAccountID.
func newAPIKeyMaterial(tenantID, userID, serviceAccountID string, expires time.Time) (apiKeyMaterial, error) {
	t, err := uuid.Parse(tenantID)
	if err != nil {
		return apiKeyMaterial{}, fmt.Errorf("api key for tenant %q: %w", tenantID, err)
	}
	buf := make([]byte, lookupIDBytes+secretBytes)
	if _, err := rand.Read(buf); err != nil {
		return apiKeyMaterial{}, fmt.Errorf("api key: %w", err)
	}
	lookup := hex.EncodeToString(buf[:lookupIDBytes])
	secret := apiKeyPrefix + hex.EncodeToString(t[:]) + "_" + lookup + "_" +
		base64.RawURLEncoding.EncodeToString(buf[lookupIDBytes:])
	sum := sha256.Sum256([]byte(secret))
	return apiKeyMaterial{
		secret: secret,
		stored: store.NewAPIKey{
			ID:               uuid.NewString(),
			LookupID:         lookup,
			SecretHash:       sum[:],
			UserID:           userID,
			ServiceAccountID: serviceAccountID,
			ExpiresAt:        expires,
		},
	}, nil
}

// parseAPIKey splits a key into its tenant and lookup id. ok is false for anything that is not
// shaped like one of our keys; the secret part is checked only by hash.
func parseAPIKey(key string) (tenantID, lookupID string, ok bool) {
	rest, found := strings.CutPrefix(key, apiKeyPrefix)
	if !found {
		return "", "", false
	}
	// The secret is base64url and may itself contain '_': split off exactly two fields.
	parts := strings.SplitN(rest, "_", 3)
	if len(parts) != 3 || len(parts[0]) != tenantHexLength || len(parts[1]) != 2*lookupIDBytes || parts[2] == "" {
		return "", "", false
	}
	raw, err := hex.DecodeString(parts[0])
	if err != nil {
		return "", "", false
	}
	t, err := uuid.FromBytes(raw)
	if err != nil || t == uuid.Nil {
		return "", "", false
	}
	if _, err := hex.DecodeString(parts[1]); err != nil || strings.ToLower(parts[1]) != parts[1] {
		return "", "", false
	}
	return t.String(), parts[1], true
}

// KeyPrefix is the public part of a key ("bhk_<tenant>_<lookup>"), shown in listings so
// people can tell their keys apart by the start of the string they hold.
func KeyPrefix(tenantID, lookupID string) string {
	t, err := uuid.Parse(tenantID)
	if err != nil {
		return apiKeyPrefix + lookupID
	}
	return apiKeyPrefix + hex.EncodeToString(t[:]) + "_" + lookupID
}

// hashMatches compares in constant time, so response timing says nothing about how much of a
// guessed key was right.
func hashMatches(key string) func(stored []byte) bool {
	sum := sha256.Sum256([]byte(key))
	return func(stored []byte) bool { return subtle.ConstantTimeCompare(stored, sum[:]) == 1 }
}
