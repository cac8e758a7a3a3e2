package token

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bulkhead/bulkhead/pkg/pgtenant"
)

// ErrNoCurrentKey means the store holds no current signing key to retire.
var ErrNoCurrentKey = errors.New("token: no current signing key")

// StoredKey is one signing key as persisted. The private key is only ever stored sealed.
type StoredKey struct {
	KID       string
	PublicKey ed25519.PublicKey
	// SealedPrivateKey is the Ed25519 seed sealed under the KEK with KID as associated data.
	SealedPrivateKey []byte
	CreatedAt        time.Time
	// RetiredAt is when the key stopped signing; zero for the current key.
	RetiredAt time.Time
	// PublishUntil is when a retired key leaves the JWKS; zero for the current key.
	PublishUntil time.Time
}

// Current reports whether k is the key that signs.
func (k StoredKey) Current() bool { return k.RetiredAt.IsZero() }

// KeyStore persists signing keys so that every identity replica signs with the same key and
// publishes the same set. Implementations must be safe for concurrent use by several processes.
type KeyStore interface {
	// PublishedKeys returns the current key and every retired key whose PublishUntil is after
	// now, oldest first. An empty store returns no keys and no error.
	PublishedKeys(ctx context.Context, now time.Time) ([]StoredKey, error)
	// CreateFirstKey stores k as the current key unless a current key exists, and reports
	// whether it did. Replicas starting together race here: exactly one wins.
	CreateFirstKey(ctx context.Context, k StoredKey) (created bool, err error)
	// Rotate atomically retires the current key (RetiredAt = retiredAt, PublishUntil =
	// publishUntil) and stores next as the current key. Concurrent rotations are serialized:
	// each retires the key the previous one made current. Without a current key it returns
	// ErrNoCurrentKey and stores nothing.
	Rotate(ctx context.Context, next StoredKey, retiredAt, publishUntil time.Time) error
}

// The SQL of PostgresStore (table from migrations/00002_signing_keys.sql).
const (
	selectPublishedKeysSQL = `SELECT kid, public_key, sealed_private_key, created_at, retired_at, publish_until
		FROM signing_keys
		WHERE retired_at IS NULL OR publish_until > $1
		ORDER BY created_at, kid`

	// The conflict target is the partial unique index signing_keys_one_current.
	insertFirstKeySQL = `INSERT INTO signing_keys (kid, alg, public_key, sealed_private_key, created_at)
		VALUES ($1, 'EdDSA', $2, $3, $4)
		ON CONFLICT ((retired_at IS NULL)) WHERE retired_at IS NULL DO NOTHING`

	// Transaction-scoped, so it is released by COMMIT or ROLLBACK even if the caller dies.
	lockRotationSQL = `SELECT pg_advisory_xact_lock($1)`

	retireCurrentKeySQL = `UPDATE signing_keys SET retired_at = $1, publish_until = $2
		WHERE retired_at IS NULL`

	insertCurrentKeySQL = `INSERT INTO signing_keys (kid, alg, public_key, sealed_private_key, created_at)
		VALUES ($1, 'EdDSA', $2, $3, $4)`
)

// rotationLockID is the advisory lock that serializes rotations ("bulkkeys" in ASCII); it must
// differ from every other advisory lock id used on identity's database (goose's is derived
// from an FNV hash of the version table name).
const rotationLockID int64 = 0x62756c6b6b657973

// PostgresStore is the KeyStore of identity's database (global table signing_keys), used
// through pgtenant's global transactions as the service's app role.
type PostgresStore struct {
	db *pgtenant.DB
}

var _ KeyStore = (*PostgresStore)(nil)

// NewPostgresStore returns a KeyStore on db.
func NewPostgresStore(db *pgtenant.DB) *PostgresStore {
	return &PostgresStore{db: db}
}

// PublishedKeys implements KeyStore.
func (s *PostgresStore) PublishedKeys(ctx context.Context, now time.Time) ([]StoredKey, error) {
	var keys []StoredKey
	err := s.db.InGlobalTx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, selectPublishedKeysSQL, now)
		if err != nil {
			return err
		}
		keys, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (StoredKey, error) {
			var (
				k                     StoredKey
				pub                   []byte
				retired, publishUntil *time.Time
			)
			if err := row.Scan(&k.KID, &pub, &k.SealedPrivateKey, &k.CreatedAt, &retired, &publishUntil); err != nil {
				return StoredKey{}, err
			}
			k.PublicKey = ed25519.PublicKey(pub)
			if retired != nil {
				k.RetiredAt = *retired
			}
			if publishUntil != nil {
				k.PublishUntil = *publishUntil
			}
			return k, nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("token: load signing keys: %w", err)
	}
	return keys, nil
}

// CreateFirstKey implements KeyStore.
func (s *PostgresStore) CreateFirstKey(ctx context.Context, k StoredKey) (bool, error) {
	var created bool
	err := s.db.InGlobalTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, insertFirstKeySQL, k.KID, []byte(k.PublicKey), k.SealedPrivateKey, k.CreatedAt)
		created = tag.RowsAffected() == 1
		return err
	})
	if err != nil {
		return false, fmt.Errorf("token: create first signing key: %w", err)
	}
	return created, nil
}

// Rotate implements KeyStore.
func (s *PostgresStore) Rotate(ctx context.Context, next StoredKey, retiredAt, publishUntil time.Time) error {
	err := s.db.InGlobalTx(ctx, func(tx pgx.Tx) error {
		// Without the lock, a second concurrent rotation would find no current row to retire
		// (the first one retired it) and then collide with the first one's new key on the
		// one-current index.
		if _, err := tx.Exec(ctx, lockRotationSQL, rotationLockID); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, retireCurrentKeySQL, retiredAt, publishUntil)
		if err != nil {
			return err
		}
		if tag.RowsAffected() != 1 {
			return ErrNoCurrentKey
		}
		_, err = tx.Exec(ctx, insertCurrentKeySQL, next.KID, []byte(next.PublicKey), next.SealedPrivateKey, next.CreatedAt)
		return err
	})
	if err != nil {
		return fmt.Errorf("token: rotate signing key: %w", err)
	}
	return nil
}
