package token_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bulkhead/bulkhead/pkg/authn"
	"github.com/bulkhead/bulkhead/pkg/claims"
	"github.com/bulkhead/bulkhead/pkg/pgtenant"

	"github.com/bulkhead/bulkhead/services/identity/internal/token"
)

func publishedKIDs(t *testing.T, keys *token.Keyring) []string {
	t.Helper()
	set, err := keys.KeySet(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var kids []string
	for i := range set.Len() {
		k, _ := set.Key(i)
		kid, _ := k.KeyID()
		kids = append(kids, kid)
	}
	return kids
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func kidOf(t *testing.T, tok string) string {
	t.Helper()
	kid, _ := decodePart(t, tok, 0)["kid"].(string)
	return kid
}

func serviceGrant() token.Grant {
	return token.Grant{Kind: claims.KindService, Subject: "connection", Audience: []string{identityAudience}}
}

func TestRotationKeepsOldKeyUntilItsTokensExpire(t *testing.T) {
	t.Parallel()
	clk := newClock()
	keys := replica(t, newDB(t), newKEK(t), clk)
	iss := newIssuer(t, keys, clk)
	v := identityVerifier(t, keys, clk)
	ctx := context.Background()

	oldKID := keys.CurrentKID()
	// The longest-lived token the old key can sign, issued just before the rotation.
	oldTok, oldExp, err := iss.Issue(ctx, token.Grant{Kind: claims.KindService, Subject: "connection", Audience: []string{identityAudience}, TTL: token.MaxTTL})
	if err != nil {
		t.Fatal(err)
	}

	newKID, err := keys.Rotate(ctx)
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	if newKID == oldKID || keys.CurrentKID() != newKID {
		t.Fatalf("after Rotate: current %s, returned %s, old %s", keys.CurrentKID(), newKID, oldKID)
	}
	newTok := issue(t, iss, serviceGrant())
	if got := kidOf(t, newTok); got != newKID {
		t.Fatalf("token after rotation signed with %s, want %s", got, newKID)
	}
	if kids := publishedKIDs(t, keys); len(kids) != 2 || !contains(kids, oldKID) || !contains(kids, newKID) {
		t.Fatalf("published after rotation = %v, want old %s and new %s", kids, oldKID, newKID)
	}
	for _, tok := range []string{oldTok, newTok} {
		if _, err := v.Verify(ctx, tok); err != nil {
			t.Fatalf("Verify after rotation: %v", err)
		}
	}

	// Up to the old token's last valid second (exp + the verifier's skew), the old key stays.
	clk.Advance(oldExp.Sub(clk.Now()) + authn.DefaultSkew - time.Second)
	if _, err := v.Verify(ctx, oldTok); err != nil {
		t.Fatalf("old token refused before it expired: %v", err)
	}
	if !contains(publishedKIDs(t, keys), oldKID) {
		t.Fatal("old key unpublished while a token it signed is still valid")
	}

	// Once the overlap has passed, the old key is gone from the set and the JWKS document.
	clk.Advance(keys.Overlap())
	if kids := publishedKIDs(t, keys); len(kids) != 1 || kids[0] != newKID {
		t.Fatalf("published after the overlap = %v, want only %s", kids, newKID)
	}
	doc, err := keys.JWKS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(doc, []byte(oldKID)) {
		t.Fatalf("JWKS still lists the retired key: %s", doc)
	}
	if code := status.Code(verifyErr(v, oldTok)); code != codes.Unauthenticated {
		t.Fatalf("old token after the overlap: code %s, want Unauthenticated", code)
	}
	if _, err := v.Verify(ctx, issue(t, iss, serviceGrant())); err != nil {
		t.Fatalf("fresh token after the overlap: %v", err)
	}
}

func verifyErr(v *authn.Verifier, tok string) error {
	_, err := v.Verify(context.Background(), tok)
	return err
}

// TestReplicasShareKeys: a second key ring on the same database is another identity replica.
// It must use the first one's key rather than make its own, verify the first one's tokens, and
// follow a rotation the first one makes.
func TestReplicasShareKeys(t *testing.T) {
	t.Parallel()
	clk := newClock()
	db := newDB(t)
	kek := newKEK(t)
	a := replica(t, db, kek, clk)
	b := replica(t, db, kek, clk)
	ctx := context.Background()

	if a.CurrentKID() != b.CurrentKID() {
		t.Fatalf("replicas sign with different keys: %s and %s", a.CurrentKID(), b.CurrentKID())
	}
	issA, issB := newIssuer(t, a, clk), newIssuer(t, b, clk)
	verifyOnB := identityVerifier(t, b, clk)
	if _, err := verifyOnB.Verify(ctx, issue(t, issA, serviceGrant())); err != nil {
		t.Fatalf("B refuses A's token: %v", err)
	}

	oldKID := a.CurrentKID()
	newKID, err := a.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// B has not reloaded yet: A's new kid is unknown to it, and the verifier's refresh on an
	// unknown kid makes B reload from the table.
	if contains(publishedKIDs(t, b), newKID) {
		t.Fatal("test premise: B already knows the new key")
	}
	fromA := issue(t, issA, serviceGrant())
	if got := kidOf(t, fromA); got != newKID {
		t.Fatalf("A signs with %s after rotating to %s", got, newKID)
	}
	if _, err := verifyOnB.Verify(ctx, fromA); err != nil {
		t.Fatalf("B refuses A's token signed with the new key: %v", err)
	}
	if kids := publishedKIDs(t, b); !contains(kids, newKID) || !contains(kids, oldKID) {
		t.Fatalf("B publishes %v, want the old %s and the new %s", kids, oldKID, newKID)
	}
	// B's Refresh above loaded the rotation, so B signs with the new key too.
	if got := kidOf(t, issue(t, issB, serviceGrant())); got != newKID {
		t.Fatalf("B signs with %s after reloading, want %s", got, newKID)
	}

	// A rotation B never hears about through a token: B switches at its next refresh.
	newerKID, err := a.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(token.DefaultRefreshInterval)
	if got := kidOf(t, issue(t, issB, serviceGrant())); got != newerKID {
		t.Fatalf("B signs with %s a refresh interval after A rotated to %s", got, newerKID)
	}
	if got, want := publishedKIDs(t, b), publishedKIDs(t, a); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("B publishes %v, A publishes %v", got, want)
	}
	docA, _ := a.JWKS(ctx)
	docB, _ := b.JWKS(ctx)
	if !bytes.Equal(docA, docB) {
		t.Fatalf("replicas serve different JWKS documents:\n%s\n%s", docA, docB)
	}
}

func TestReplicasStartingTogetherShareOneKey(t *testing.T) {
	t.Parallel()
	clk := newClock()
	db := newDB(t)
	kek := newKEK(t)
	const n = 6
	kids := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		tdb := db.AppDB(t)
		wg.Go(func() {
			keys, err := token.NewKeyring(context.Background(), token.KeyringConfig{Store: token.NewPostgresStore(tdb), KEK: kek, Now: clk.Now})
			if err != nil {
				errs <- err
				return
			}
			kids[i] = keys.CurrentKID()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("NewKeyring: %v", err)
	}
	for _, kid := range kids[1:] {
		if kid != kids[0] {
			t.Fatalf("replicas started with different keys: %v", kids)
		}
	}
	var rows int
	if err := db.SuperPool(t).QueryRow(context.Background(), "SELECT count(*) FROM signing_keys").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 1 {
		t.Fatalf("%d signing keys after a concurrent start, want 1", rows)
	}
}

func TestConcurrentRotationsAreSerialized(t *testing.T) {
	t.Parallel()
	clk := newClock()
	db := newDB(t)
	kek := newKEK(t)
	a, b := replica(t, db, kek, clk), replica(t, db, kek, clk)
	const n = 4
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for range n {
		for _, keys := range []*token.Keyring{a, b} {
			wg.Go(func() {
				if _, err := keys.Rotate(context.Background()); err != nil {
					errs <- err
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Rotate: %v", err)
	}
	var total, current int
	if err := db.SuperPool(t).QueryRow(context.Background(),
		"SELECT count(*), count(*) FILTER (WHERE retired_at IS NULL) FROM signing_keys").Scan(&total, &current); err != nil {
		t.Fatal(err)
	}
	if total != 1+2*n || current != 1 {
		t.Fatalf("%d keys, %d current after %d rotations; want %d and 1", total, current, 2*n, 1+2*n)
	}
}

func TestWrongKEKCannotOpenKeys(t *testing.T) {
	t.Parallel()
	clk := newClock()
	db := newDB(t)
	replica(t, db, newKEK(t), clk)

	_, err := token.NewKeyring(context.Background(), token.KeyringConfig{Store: token.NewPostgresStore(db.AppDB(t)), KEK: newKEK(t), Now: clk.Now})
	if !errors.Is(err, token.ErrUnseal) {
		t.Fatalf("NewKeyring with another KEK = %v, want ErrUnseal", err)
	}

	// The sealed column holds no recognizable key material: not the seed, not the public key.
	var pub, sealed []byte
	if err := db.SuperPool(t).QueryRow(context.Background(), "SELECT public_key, sealed_private_key FROM signing_keys").Scan(&pub, &sealed); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, pub) {
		t.Fatal("sealed private key contains the public key in the clear")
	}
}

// TestDevKEKRotatesUnreadableKey: with a generated development KEK, the keys of a previous run
// cannot be opened; the key ring rotates to a fresh key instead of refusing to start, and does
// not publish keys it cannot vouch for.
func TestDevKEKRotatesUnreadableKey(t *testing.T) {
	t.Parallel()
	clk := newClock()
	db := newDB(t)
	first := replica(t, db, newKEK(t), clk)
	oldKID := first.CurrentKID()

	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, nil))
	devKEK, err := token.GenerateDevKEK(logger)
	if err != nil {
		t.Fatal(err)
	}
	if !devKEK.Ephemeral() {
		t.Fatal("GenerateDevKEK returned a non-ephemeral KEK")
	}
	keys, err := token.NewKeyring(context.Background(), token.KeyringConfig{Store: token.NewPostgresStore(db.AppDB(t)), KEK: devKEK, Logger: logger, Now: clk.Now})
	if err != nil {
		t.Fatalf("NewKeyring with a dev KEK: %v", err)
	}
	if keys.CurrentKID() == "" || keys.CurrentKID() == oldKID {
		t.Fatalf("dev key ring signs with %q, want a new key (old %s)", keys.CurrentKID(), oldKID)
	}
	if kids := publishedKIDs(t, keys); len(kids) != 1 || kids[0] != keys.CurrentKID() {
		t.Fatalf("dev key ring publishes %v, want only its own key", kids)
	}
	if !strings.Contains(logs.String(), "will not survive a restart") {
		t.Fatalf("no restart warning logged: %s", logs.String())
	}
}

// TestInjectedKeyIsNotPublished tries to get a key of one's own trusted by writing to the table
// without the KEK: the key ring must neither publish nor accept it.
func TestInjectedKeyIsNotPublished(t *testing.T) {
	t.Parallel()
	clk := newClock()
	db := newDB(t)
	kek := newKEK(t)
	keys := replica(t, db, kek, clk)
	v := identityVerifier(t, keys, clk)

	// An attacker's key, stored under its thumbprint kid and "sealed" under a KEK of their own,
	// as a retired key still in its publication window.
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	attacker, err := token.SealKey(newKEK(t), priv, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	_, err = db.SuperPool(t).Exec(context.Background(), `INSERT INTO signing_keys
		(kid, alg, public_key, sealed_private_key, created_at, retired_at, publish_until)
		VALUES ($1, 'EdDSA', $2, $3, now(), now(), now() + interval '1 hour')`,
		attacker.KID, []byte(attacker.PublicKey), attacker.SealedPrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := keys.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if contains(publishedKIDs(t, keys), attacker.KID) {
		t.Fatal("a key inserted without the KEK is published")
	}
	forged := compact(t, map[string]any{"alg": "EdDSA", "typ": "JWT", "kid": attacker.KID},
		decodePart(t, issue(t, newIssuer(t, keys, clk), serviceGrant()), 1),
		func(in []byte) []byte { return ed25519.Sign(priv, in) })
	if code := status.Code(verifyErr(v, forged)); code != codes.Unauthenticated {
		t.Fatalf("token signed by the injected key: code %s, want Unauthenticated", code)
	}
}

// TestAppRoleCannotRewriteKeys tries, as the service's own database role, every write the key
// ring never makes: each must be refused or match no row.
func TestAppRoleCannotRewriteKeys(t *testing.T) {
	t.Parallel()
	clk := newClock()
	db := newDB(t)
	keys := replica(t, db, newKEK(t), clk)
	if _, err := keys.Rotate(context.Background()); err != nil { // one retired row, one current
		t.Fatal(err)
	}
	app := db.AppPool(t)
	ctx := context.Background()

	tests := []struct {
		name     string
		sql      string
		wantCode string // SQLSTATE; "" means the statement must succeed and change no row
	}{
		{"delete", "DELETE FROM signing_keys", ""},
		{"truncate", "TRUNCATE signing_keys", "42501"},
		{"rewrite the current key without retiring it", "UPDATE signing_keys SET public_key = decode(repeat('00', 32), 'hex') WHERE retired_at IS NULL", "23514"}, // the trigger fires before the policy's WITH CHECK
		{"swap the current public key", "UPDATE signing_keys SET public_key = decode(repeat('00', 32), 'hex'), retired_at = now(), publish_until = now() + interval '1 hour' WHERE retired_at IS NULL", "23514"},
		{"extend a retired key", "UPDATE signing_keys SET publish_until = publish_until + interval '1 year' WHERE retired_at IS NOT NULL", ""},
		{"un-retire a key", "UPDATE signing_keys SET retired_at = NULL, publish_until = NULL WHERE retired_at IS NOT NULL", ""},
		{"insert a retired key", "INSERT INTO signing_keys (kid, alg, public_key, sealed_private_key, created_at, retired_at, publish_until) VALUES ('AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', 'EdDSA', decode(repeat('00', 32), 'hex'), decode(repeat('00', 61), 'hex'), now(), now(), now() + interval '1 hour')", "42501"},
		{"insert a second current key", "INSERT INTO signing_keys (kid, alg, public_key, sealed_private_key, created_at) VALUES ('AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', 'EdDSA', decode(repeat('00', 32), 'hex'), decode(repeat('00', 61), 'hex'), now())", "23505"},
	}
	snapshot := func() string {
		var s string
		if err := db.SuperPool(t).QueryRow(ctx, `SELECT string_agg(concat_ws('|', kid, encode(public_key, 'hex'),
			encode(sealed_private_key, 'hex'), retired_at, publish_until), ',' ORDER BY kid) FROM signing_keys`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	before := snapshot()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tag, err := app.Exec(ctx, tt.sql)
			var pgErr *pgconn.PgError
			switch {
			case tt.wantCode != "":
				if !errors.As(err, &pgErr) || pgErr.Code != tt.wantCode {
					t.Fatalf("%s: err %v, want SQLSTATE %s", tt.sql, err, tt.wantCode)
				}
			default:
				if err != nil {
					t.Fatalf("%s: %v", tt.sql, err)
				}
				if tag.RowsAffected() != 0 {
					t.Fatalf("%s changed %d rows", tt.sql, tag.RowsAffected())
				}
			}
		})
	}
	if after := snapshot(); after != before {
		t.Fatalf("the app role changed the keys:\nbefore %s\nafter  %s", before, after)
	}
}

// TestSigningNeedsFreshKeys: a replica that cannot reload its keys stops signing once they are
// older than the refresh interval (it might be signing with a key another replica retired),
// but keeps verifying with the keys it has.
func TestSigningNeedsFreshKeys(t *testing.T) {
	t.Parallel()
	clk := newClock()
	db := newDB(t)
	pool, err := pgxpool.New(context.Background(), db.AppURL)
	if err != nil {
		t.Fatal(err)
	}
	tdb := pgtenant.New(pool)
	keys := replicaOn(t, tdb, newKEK(t), clk)
	iss := newIssuer(t, keys, clk)
	v := identityVerifier(t, keys, clk)
	tok := issue(t, iss, serviceGrant())

	pool.Close() // the database is gone for this replica
	clk.Advance(token.DefaultRefreshInterval)
	if _, _, err := iss.Issue(context.Background(), serviceGrant()); err == nil {
		t.Fatal("Issue succeeded with keys that could not be reloaded")
	}
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatalf("Verify with the keys loaded before: %v", err)
	}
}

func TestRefreshIsRateLimited(t *testing.T) {
	t.Parallel()
	clk := newClock()
	keys := replica(t, newDB(t), newKEK(t), clk)
	ctx := context.Background()
	if err := keys.Refresh(ctx); err != nil {
		t.Fatalf("first Refresh: %v", err)
	}
	if err := keys.Refresh(ctx); !errors.Is(err, authn.ErrRefreshLimited) {
		t.Fatalf("second Refresh at once = %v, want ErrRefreshLimited", err)
	}
	clk.Advance(token.DefaultMinRefreshInterval)
	if err := keys.Refresh(ctx); err != nil {
		t.Fatalf("Refresh after the interval: %v", err)
	}
}

func TestNewKeyringRefusesBadConfig(t *testing.T) {
	t.Parallel()
	db := newDB(t)
	store := token.NewPostgresStore(db.AppDB(t))
	kek := newKEK(t)
	tests := []struct {
		name string
		cfg  token.KeyringConfig
	}{
		{"no store", token.KeyringConfig{KEK: kek}},
		{"no KEK", token.KeyringConfig{Store: store}},
		{"skew below the verifiers'", token.KeyringConfig{Store: store, KEK: kek, ClockSkew: time.Second}},
		{"negative skew", token.KeyringConfig{Store: store, KEK: kek, ClockSkew: -time.Minute}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := token.NewKeyring(context.Background(), tt.cfg); err == nil {
				t.Fatal("NewKeyring accepted the config")
			}
		})
	}
	var rows int
	if err := db.SuperPool(t).QueryRow(context.Background(), "SELECT count(*) FROM signing_keys").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 0 {
		t.Fatalf("a refused config stored %d keys", rows)
	}
}

// TestRotateRecoversFromRetiredCurrentKey: someone with the app role's rights retires the
// current key without a successor. Issuing then fails closed, and Rotate (the operator's
// RotateSigningKey) restores a current key.
func TestRotateRecoversFromRetiredCurrentKey(t *testing.T) {
	t.Parallel()
	clk := newClock()
	db := newDB(t)
	keys := replica(t, db, newKEK(t), clk)
	iss := newIssuer(t, keys, clk)
	ctx := context.Background()

	if _, err := db.AppPool(t).Exec(ctx, "UPDATE signing_keys SET retired_at = now(), publish_until = now() + interval '1 hour' WHERE retired_at IS NULL"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(token.DefaultRefreshInterval)
	if _, _, err := iss.Issue(ctx, serviceGrant()); !errors.Is(err, token.ErrNoSigningKey) || !errors.Is(err, token.ErrNoCurrentKey) {
		t.Fatalf("Issue without a current key = %v, want ErrNoSigningKey (ErrNoCurrentKey)", err)
	}
	kid, err := keys.Rotate(ctx)
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	if got := kidOf(t, issue(t, iss, serviceGrant())); got != kid {
		t.Fatalf("signed with %s after recovery, want %s", got, kid)
	}
}
