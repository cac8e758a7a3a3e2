package token

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"golang.org/x/time/rate"

	"github.com/bulkhead/bulkhead/pkg/authn"
)

// Defaults for KeyringConfig.
const (
	// DefaultRefreshInterval bounds how long a replica keeps signing with a key another replica
	// has retired, and how late it publishes a key another replica created.
	DefaultRefreshInterval = 10 * time.Second
	// DefaultMinRefreshInterval is the least time between two reloads asked for by Refresh
	// (tokens with an unknown kid), so invented kids cannot hammer the database.
	DefaultMinRefreshInterval = time.Second
	// DefaultClockSkew is added to a retired key's publication, covering clock differences
	// between replicas and the verifiers' own skew tolerance (pkg/authn: 30s).
	DefaultClockSkew = time.Minute
)

// ErrNoSigningKey means the key ring has no current key it can sign with (the current key's
// sealed private key does not open with this replica's KEK).
var ErrNoSigningKey = errors.New("token: no usable signing key")

// KeyringConfig configures NewKeyring.
type KeyringConfig struct {
	// Store persists the keys for every replica. Required.
	Store KeyStore
	// KEK seals private keys at rest; every replica needs the same one. Required: ParseKEK in
	// production, GenerateDevKEK in development (single replica; see there).
	KEK KEK
	// RefreshInterval is how often the key set is reloaded from Store when it is used
	// (default DefaultRefreshInterval). Issuing never signs with a key set older than this.
	RefreshInterval time.Duration
	// MinRefreshInterval rate-limits reloads asked for by Refresh (default
	// DefaultMinRefreshInterval).
	MinRefreshInterval time.Duration
	// ClockSkew is the margin added to a retired key's publication (default DefaultClockSkew);
	// it must be at least the skew verifiers tolerate on exp (authn.DefaultSkew), else
	// NewKeyring fails.
	ClockSkew time.Duration
	// Logger receives key lifecycle events; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Keyring holds identity's Ed25519 signing keys: one current key signs; a rotation makes a new
// key current and keeps the previous one published until every token it signed has expired
// (Overlap), after which it leaves the JWKS. Keys live in a KeyStore shared by all replicas:
// each replica reloads them at most RefreshInterval after using them, and on Refresh (a token
// with a kid it does not know, signed by another replica's new key).
//
// Keyring is an authn.KeySource, so identity verifies its own tokens with pkg/authn straight
// from its key ring, without HTTP. It is safe for concurrent use.
type Keyring struct {
	store      KeyStore
	kek        KEK
	logger     *slog.Logger
	refresh    time.Duration
	minRefresh time.Duration
	overlap    time.Duration
	now        func() time.Time
	limiter    *rate.Limiter

	view  atomic.Pointer[view] // read without locks by every issue and verification
	loads atomic.Uint64        // successful loads, so callers that waited for mu skip theirs

	mu        sync.Mutex          // serializes loads and view rebuilds; guards the fields below
	attempted time.Time           // last load attempt, successful or not
	opened    map[string]*ringKey // kid → verified key, so a reload opens only new rows
	rejected  map[string]struct{} // kids already logged as unusable
}

var _ authn.KeySource = (*Keyring)(nil)

// ringKey is a key whose sealed private key opened with our KEK and matches its stored public
// key and kid: only such keys are published or used.
type ringKey struct {
	kid    string
	sealed []byte            // the sealed bytes that were opened; if the row changes, reopen
	pubRaw ed25519.PublicKey // as stored
	// priv is the raw key, not a JWK: jwx re-derives a JWK's Ed25519 key from its seed on
	// every signature, which cost a third of Issue's time.
	priv ed25519.PrivateKey
	pub  jwk.Key // with kid, alg and use set
}

// entry is one published key in a view.
type entry struct {
	key          *ringKey
	current      bool
	publishUntil time.Time // zero for the current key
}

// view is an immutable snapshot: what was loaded, and the JWKS built from it for a time.
type view struct {
	loadedAt   time.Time
	entries    []entry
	current    *ringKey // nil when there is none usable; currentErr says why
	currentErr error
	set        jwk.Set // shared, never modified
	jwks       []byte
	etag       string
	validUntil time.Time // when the first retired key in set leaves it; zero if none will
}

// NewKeyring loads the keys from cfg.Store, creating the first key if there is none. If the
// current key cannot be opened with cfg.KEK it fails with an error wrapping ErrUnseal (a
// misconfigured replica must not start signing with a key the others cannot publish) — unless
// the KEK is a development one, in which case it rotates to a fresh key.
func NewKeyring(ctx context.Context, cfg KeyringConfig) (*Keyring, error) {
	if cfg.Store == nil {
		return nil, errors.New("token: KeyringConfig.Store is required")
	}
	if !cfg.KEK.valid() {
		return nil, errors.New("token: KeyringConfig.KEK is required")
	}
	if cfg.RefreshInterval <= 0 {
		cfg.RefreshInterval = DefaultRefreshInterval
	}
	if cfg.MinRefreshInterval <= 0 {
		cfg.MinRefreshInterval = DefaultMinRefreshInterval
	}
	if cfg.ClockSkew == 0 {
		cfg.ClockSkew = DefaultClockSkew
	}
	if cfg.ClockSkew < authn.DefaultSkew {
		// Less would unpublish a retired key while verifiers still accept its last tokens.
		return nil, fmt.Errorf("token: KeyringConfig.ClockSkew %s is below the verifiers' skew %s", cfg.ClockSkew, authn.DefaultSkew)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	k := &Keyring{
		store:      cfg.Store,
		kek:        cfg.KEK,
		logger:     cfg.Logger,
		refresh:    cfg.RefreshInterval,
		minRefresh: cfg.MinRefreshInterval,
		// A replica that has not reloaded yet may sign with the old key for up to refresh
		// after the rotation, and such a token lives MaxTTL, plus the verifiers' skew.
		overlap:  MaxTTL + cfg.RefreshInterval + cfg.ClockSkew,
		now:      cfg.Now,
		limiter:  rate.NewLimiter(rate.Every(cfg.MinRefreshInterval), 1),
		opened:   map[string]*ringKey{},
		rejected: map[string]struct{}{},
	}
	if err := k.init(ctx); err != nil {
		return nil, err
	}
	return k, nil
}

func (k *Keyring) init(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.load(ctx); err != nil {
		return err
	}
	v := k.view.Load()
	switch {
	case v.current != nil:
		return nil
	case errors.Is(v.currentErr, ErrNoCurrentKey):
		next, err := k.newStoredKey()
		if err != nil {
			return err
		}
		created, err := k.store.CreateFirstKey(ctx, next)
		if err != nil {
			return err
		}
		if created {
			k.logger.InfoContext(ctx, "token: created the first signing key", "kid", next.KID)
		}
	case k.kek.Ephemeral():
		k.logger.WarnContext(ctx, "token: the current signing key was sealed with another key-encryption key; rotating to a new key (development KEK)")
		next, err := k.newStoredKey()
		if err != nil {
			return err
		}
		if err := k.rotateStore(ctx, next); err != nil {
			return err
		}
	default:
		return fmt.Errorf("token: cannot use the current signing key (is the key-encryption key the one the other replicas use?): %w", v.currentErr)
	}
	// Whoever created the key (us, or a replica that won the race), load it.
	if err := k.load(ctx); err != nil {
		return err
	}
	if v := k.view.Load(); v.current == nil {
		return v.currentErr
	}
	return nil
}

// Overlap is how long a retired key stays published: the longest token lifetime plus the
// replicas' refresh interval plus clock skew.
func (k *Keyring) Overlap() time.Duration { return k.overlap }

// CurrentKID returns the kid of the key this replica signs with now ("" if none is usable).
func (k *Keyring) CurrentKID() string {
	if c := k.view.Load().current; c != nil {
		return c.kid
	}
	return ""
}

// Rotate makes a new key current and returns its kid. The previous key stays published for
// Overlap. Other replicas switch to the new key within their RefreshInterval. Rotate also
// recovers a store left without a current key (someone retired it without a successor).
func (k *Keyring) Rotate(ctx context.Context) (string, error) {
	next, err := k.newStoredKey()
	if err != nil {
		return "", err
	}
	err = k.rotateStore(ctx, next)
	if errors.Is(err, ErrNoCurrentKey) {
		var created bool
		created, err = k.store.CreateFirstKey(ctx, next)
		if err == nil && !created {
			// Another replica made a key current meanwhile: rotate that one as asked.
			err = k.rotateStore(ctx, next)
		}
	}
	if err != nil {
		return "", err
	}
	k.mu.Lock()
	err = k.load(ctx)
	k.mu.Unlock()
	if err != nil {
		// The rotation is committed; this replica catches up at its next refresh.
		k.logger.WarnContext(ctx, "token: rotated, but reloading the keys failed", "kid", next.KID, "error", err)
	}
	k.logger.InfoContext(ctx, "token: rotated the signing key", "kid", next.KID, "previous_published_for", k.overlap)
	return next.KID, nil
}

func (k *Keyring) rotateStore(ctx context.Context, next StoredKey) error {
	now := k.now()
	return k.store.Rotate(ctx, next, now, now.Add(k.overlap))
}

// KeySet returns the published public keys (authn.KeySource). The set is shared: never modify
// it. If a due reload fails it answers from the last keys loaded (and logs), so verification
// survives a database hiccup; retired keys still leave the set on time.
func (k *Keyring) KeySet(ctx context.Context) (jwk.Set, error) {
	v, err := k.fresh(ctx, false)
	if err != nil {
		return nil, err
	}
	return v.set, nil
}

// Refresh reloads the keys now (authn.KeySource): a token named a kid this replica does not
// know, perhaps because another replica just rotated. Reloads asked this way are rate-limited
// to one per MinRefreshInterval (authn.ErrRefreshLimited); callers that waited for a reload
// in progress share it.
func (k *Keyring) Refresh(ctx context.Context) error {
	gen := k.loads.Load()
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.loads.Load() != gen {
		return nil // loaded while we waited: as new as ours would be
	}
	if !k.limiter.AllowN(k.now(), 1) {
		return authn.ErrRefreshLimited
	}
	return k.load(ctx)
}

// JWKS returns the published public keys as a JWK Set document ({"keys":[…]}), exactly what
// GetJwks returns and /.well-known/jwks.json serves.
func (k *Keyring) JWKS(ctx context.Context) ([]byte, error) {
	v, err := k.fresh(ctx, false)
	if err != nil {
		return nil, err
	}
	return slices.Clone(v.jwks), nil
}

// signer returns the key to sign with, from keys loaded less than RefreshInterval ago: a
// replica that cannot reload refuses to sign rather than keep using a key that may have been
// retired (its tokens could outlive the key's publication).
func (k *Keyring) signer(ctx context.Context) (*ringKey, error) {
	v, err := k.fresh(ctx, true)
	if err != nil {
		return nil, err
	}
	if v.current == nil {
		return nil, fmt.Errorf("%w: %w", ErrNoSigningKey, v.currentErr)
	}
	return v.current, nil
}

// fresh returns the view for now, reloading first when it is older than RefreshInterval. A
// failed reload is an error when strict, else logged (and retried after MinRefreshInterval).
func (k *Keyring) fresh(ctx context.Context, strict bool) (*view, error) {
	now := k.now()
	v := k.view.Load()
	if now.Sub(v.loadedAt) >= k.refresh {
		if err := k.reloadDue(ctx, now, strict); err != nil {
			return nil, err
		}
		v = k.view.Load()
	}
	if v.validUntil.IsZero() || now.Before(v.validUntil) {
		return v, nil
	}
	// A retired key's publication ended since the view was built: rebuild without it.
	k.mu.Lock()
	defer k.mu.Unlock()
	v = k.view.Load()
	if v.validUntil.IsZero() || now.Before(v.validUntil) {
		return v, nil
	}
	nv, err := buildView(v.loadedAt, v.entries, v.current, v.currentErr, now)
	if err != nil {
		return nil, err
	}
	k.view.Store(nv)
	return nv, nil
}

func (k *Keyring) reloadDue(ctx context.Context, now time.Time, strict bool) error {
	gen := k.loads.Load()
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.loads.Load() != gen {
		return nil
	}
	if !strict && now.Sub(k.attempted) < k.minRefresh {
		return nil // the last attempt failed moments ago: do not hammer a database that is down
	}
	err := k.load(ctx)
	if err == nil {
		return nil
	}
	if strict {
		return err
	}
	k.logger.WarnContext(ctx, "token: reloading signing keys failed; using the keys loaded before", "error", err)
	return nil
}

// load reads the keys from the store, opens the new ones and installs a new view. k.mu must
// be held.
func (k *Keyring) load(ctx context.Context) error {
	now := k.now()
	k.attempted = now
	rows, err := k.store.PublishedKeys(ctx, now)
	if err != nil {
		return err
	}
	var (
		entries    = make([]entry, 0, len(rows))
		current    *ringKey
		currentErr = ErrNoCurrentKey
		seen       = make(map[string]*ringKey, len(rows))
	)
	for _, row := range rows {
		rk, err := k.openRow(row)
		if err != nil {
			if row.Current() {
				currentErr = fmt.Errorf("signing key %s: %w", row.KID, err)
			}
			k.reject(ctx, row, err)
			continue
		}
		seen[rk.kid] = rk
		entries = append(entries, entry{key: rk, current: row.Current(), publishUntil: row.PublishUntil})
		if row.Current() {
			current, currentErr = rk, nil
		}
	}
	v, err := buildView(now, entries, current, currentErr, now)
	if err != nil {
		return err
	}
	// Keys no longer published are forgotten, so the map stays as small as the table's
	// published part.
	k.opened = seen
	k.view.Store(v)
	k.loads.Add(1)
	return nil
}

// reject logs a key that cannot be used, once per kid. A key that does not open may be a
// leftover of a development KEK — or a row someone without the KEK inserted to get their own
// key published; either way it is neither published nor used.
func (k *Keyring) reject(ctx context.Context, row StoredKey, err error) {
	if _, done := k.rejected[row.KID]; done {
		return
	}
	k.rejected[row.KID] = struct{}{}
	level := slog.LevelError
	if k.kek.Ephemeral() {
		level = slog.LevelWarn
	}
	k.logger.Log(ctx, level, "token: signing key cannot be opened with this key-encryption key; not published", "kid", row.KID, "error", err)
}

var errKeyMismatch = errors.New("token: stored public key or kid does not match the sealed private key")

// openRow unseals row's private key and checks that the stored public key and kid are the
// ones it derives.
func (k *Keyring) openRow(row StoredKey) (*ringKey, error) {
	if rk, ok := k.opened[row.KID]; ok && bytes.Equal(rk.sealed, row.SealedPrivateKey) && bytes.Equal(rk.pubRaw, row.PublicKey) {
		return rk, nil
	}
	seed, err := k.kek.open(row.KID, row.SealedPrivateKey)
	if err != nil {
		return nil, err
	}
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("%w: seed is %d bytes", ErrUnseal, len(seed))
	}
	priv := ed25519.NewKeyFromSeed(seed)
	if !bytes.Equal(priv.Public().(ed25519.PublicKey), row.PublicKey) {
		return nil, errKeyMismatch
	}
	rk, err := newRingKey(priv)
	if err != nil {
		return nil, err
	}
	if rk.kid != row.KID {
		return nil, errKeyMismatch
	}
	rk.sealed = slices.Clone(row.SealedPrivateKey)
	return rk, nil
}

// newStoredKey generates a key and seals it for the store.
func (k *Keyring) newStoredKey() (StoredKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return StoredKey{}, fmt.Errorf("token: generate signing key: %w", err)
	}
	rk, err := newRingKey(priv)
	if err != nil {
		return StoredKey{}, err
	}
	sealed, err := k.kek.seal(rk.kid, priv.Seed())
	if err != nil {
		return StoredKey{}, err
	}
	return StoredKey{KID: rk.kid, PublicKey: pub, SealedPrivateKey: sealed, CreatedAt: k.now()}, nil
}

// newRingKey builds the public JWK of priv; the kid is the RFC 7638 thumbprint of the public key, so
// it is derived, not chosen, and a row's kid can be checked against its key.
func newRingKey(priv ed25519.PrivateKey) (*ringKey, error) {
	pubRaw := priv.Public().(ed25519.PublicKey)
	pub, err := jwk.Import(pubRaw)
	if err != nil {
		return nil, fmt.Errorf("token: public JWK: %w", err)
	}
	tp, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("token: thumbprint: %w", err)
	}
	kid := base64.RawURLEncoding.EncodeToString(tp)
	for name, value := range map[string]any{
		jwk.KeyIDKey:     kid,
		jwk.AlgorithmKey: jwa.EdDSA(),
		jwk.KeyUsageKey:  jwk.ForSignature,
	} {
		if err := pub.Set(name, value); err != nil {
			return nil, fmt.Errorf("token: set JWK %s: %w", name, err)
		}
	}
	return &ringKey{kid: kid, pubRaw: pubRaw, priv: priv, pub: pub}, nil
}

// buildView makes the JWKS of entries as published at now.
func buildView(loadedAt time.Time, entries []entry, current *ringKey, currentErr error, now time.Time) (*view, error) {
	set := jwk.NewSet()
	var validUntil time.Time
	for _, e := range entries {
		if !e.current {
			if !now.Before(e.publishUntil) {
				continue
			}
			if validUntil.IsZero() || e.publishUntil.Before(validUntil) {
				validUntil = e.publishUntil
			}
		}
		if err := set.AddKey(e.key.pub); err != nil {
			return nil, fmt.Errorf("token: build JWKS: %w", err)
		}
	}
	doc, err := json.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("token: encode JWKS: %w", err)
	}
	sum := sha256.Sum256(doc)
	return &view{
		loadedAt:   loadedAt,
		entries:    entries,
		current:    current,
		currentErr: currentErr,
		set:        set,
		jwks:       doc,
		etag:       `"` + base64.RawURLEncoding.EncodeToString(sum[:16]) + `"`,
		validUntil: validUntil,
	}, nil
}
