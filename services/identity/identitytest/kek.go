package identitytest

import (
	"crypto/rand"
	"encoding/base64"
	"testing"
)

// newKEK returns a random base64 key-encryption key, as BULKHEAD_KEY_ENCRYPTION_KEY holds one.
func newKEK(tb testing.TB) string {
	tb.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		tb.Fatalf("identitytest: %v", err)
	}
	return base64.StdEncoding.EncodeToString(b)
}
