package token

import (
	"crypto/ed25519"
	"time"
)

// SealKey seals priv under kek exactly as a key ring stores its keys, for tests that plant rows
// (a key sealed under a KEK the service does not have).
func SealKey(kek KEK, priv ed25519.PrivateKey, now time.Time) (StoredKey, error) {
	rk, err := newRingKey(priv)
	if err != nil {
		return StoredKey{}, err
	}
	sealed, err := kek.seal(rk.kid, priv.Seed())
	if err != nil {
		return StoredKey{}, err
	}
	return StoredKey{KID: rk.kid, PublicKey: priv.Public().(ed25519.PublicKey), SealedPrivateKey: sealed, CreatedAt: now}, nil
}
