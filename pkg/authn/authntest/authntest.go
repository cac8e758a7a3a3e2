// Package authntest is a test issuer: it signs tokens exactly as identity does (EdDSA, the claims
// of docs/design.md) with a key made for the test, and serves its JWKS over real HTTP on
// loopback. Tests of every service use it to obtain genuine tokens before (and independently of)
// the identity service; verification in those tests is the real pkg/authn verifier.
package authntest

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"
)

// DefaultIssuer is the `iss` of NewIssuer's tokens (identity's default).
const DefaultIssuer = "bulkhead-identity"

// Issuer holds signing keys. The newest key signs; every key ever added stays in the public set
// until Retire, like identity's key ring during a rotation.
type Issuer struct {
	// Name is the `iss` claim.
	Name string

	mu      sync.Mutex
	signing jwk.Key
	public  jwk.Set
}

// NewIssuer returns an issuer with a fresh random key whose kid is "test-1".
func NewIssuer(tb testing.TB) *Issuer {
	tb.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	iss, err := NewIssuerFromKey(DefaultIssuer, "test-1", priv)
	if err != nil {
		tb.Fatal(err)
	}
	return iss
}

// NewIssuerFromKey returns an issuer signing with priv under kid. A fixed key
// (ed25519.NewKeyFromSeed) makes tokens reproducible, e.g. for a committed fuzz corpus.
func NewIssuerFromKey(name, kid string, priv ed25519.PrivateKey) (*Issuer, error) {
	i := &Issuer{Name: name, public: jwk.NewSet()}
	if err := i.AddKey(kid, priv); err != nil {
		return nil, err
	}
	return i, nil
}

// AddKey makes priv the signing key under kid and publishes its public half, keeping older
// public keys (a rotation).
func (i *Issuer) AddKey(kid string, priv ed25519.PrivateKey) error {
	signing, err := jwk.Import(priv)
	if err != nil {
		return fmt.Errorf("authntest: import key: %w", err)
	}
	pub, err := jwk.Import(priv.Public())
	if err != nil {
		return fmt.Errorf("authntest: import public key: %w", err)
	}
	for _, k := range []jwk.Key{signing, pub} {
		if err := k.Set(jwk.KeyIDKey, kid); err != nil {
			return err
		}
		if err := k.Set(jwk.AlgorithmKey, jwa.EdDSA()); err != nil {
			return err
		}
		if err := k.Set(jwk.KeyUsageKey, jwk.ForSignature); err != nil {
			return err
		}
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	if err := i.public.AddKey(pub); err != nil {
		return fmt.Errorf("authntest: publish key: %w", err)
	}
	i.signing = signing
	return nil
}

// Rotate adds a fresh random key under kid and signs with it from now on.
func (i *Issuer) Rotate(tb testing.TB, kid string) {
	tb.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	if err := i.AddKey(kid, priv); err != nil {
		tb.Fatal(err)
	}
}

// PublicSet returns a copy of the published keys, what identity's JWKS endpoint serves.
func (i *Issuer) PublicSet() jwk.Set {
	i.mu.Lock()
	defer i.mu.Unlock()
	s, err := i.public.Clone()
	if err != nil {
		panic(fmt.Sprintf("authntest: clone key set: %v", err)) // in-memory clone of keys we built
	}
	return s
}

// SigningKey returns the current private signing key (with kid and alg set), for tests that
// craft unusual tokens themselves.
func (i *Issuer) SigningKey() jwk.Key {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.signing
}

// Token describes a token to mint. Zero fields get identity's defaults: a new jti, iat and nbf
// now, exp in 10 minutes, `iss` the issuer's Name.
type Token struct {
	Subject  string   // "user:<uuid>", "sa:<uuid>", "svc:<name>", "op:<name>"
	TenantID string   // `tid`; empty omits it
	Audience []string // `aud`
	Roles    []string
	Scope    string // space-separated
	Actor    string // `act.sub`
	IssuedAt time.Time
	TTL      time.Duration
	ID       string
	// Set overrides or adds raw claims after the others (e.g. "exp" to a past time).
	Set map[string]any
	// Omit removes claims after everything else (e.g. "jti").
	Omit []string
}

// Mint signs t.
func (i *Issuer) Mint(t Token) (string, error) {
	now := t.IssuedAt
	if now.IsZero() {
		now = time.Now()
	}
	ttl := t.TTL
	if ttl == 0 {
		ttl = 10 * time.Minute
	}
	id := t.ID
	if id == "" {
		id = uuid.NewString()
	}
	b := jwt.NewBuilder().
		Issuer(i.Name).
		Subject(t.Subject).
		Audience(t.Audience).
		JwtID(id).
		IssuedAt(now).
		NotBefore(now).
		Expiration(now.Add(ttl))
	if t.TenantID != "" {
		b = b.Claim("tid", t.TenantID)
	}
	if t.Roles != nil {
		b = b.Claim("roles", t.Roles)
	}
	if t.Scope != "" {
		b = b.Claim("scope", t.Scope)
	}
	if t.Actor != "" {
		b = b.Claim("act", map[string]any{"sub": t.Actor})
	}
	for k, v := range t.Set {
		b = b.Claim(k, v)
	}
	tok, err := b.Build()
	if err != nil {
		return "", fmt.Errorf("authntest: build token: %w", err)
	}
	for _, k := range t.Omit {
		if err := tok.Remove(k); err != nil {
			return "", fmt.Errorf("authntest: remove %s: %w", k, err)
		}
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.EdDSA(), i.SigningKey()))
	if err != nil {
		return "", fmt.Errorf("authntest: sign: %w", err)
	}
	return string(signed), nil
}

// MustMint is Mint for tests and benchmarks.
func (i *Issuer) MustMint(tb testing.TB, t Token) string {
	tb.Helper()
	s, err := i.Mint(t)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// JWKSServer is a real HTTP server on loopback serving an issuer's public keys.
type JWKSServer struct {
	// URL of the JWKS document.
	URL  string
	hits atomic.Int64
}

// Hits returns how many times the JWKS was fetched.
func (s *JWKSServer) Hits() int { return int(s.hits.Load()) }

// ServeJWKS serves i's current public keys at /.well-known/jwks.json on 127.0.0.1 until the
// test ends.
func (i *Issuer) ServeJWKS(tb testing.TB) *JWKSServer {
	tb.Helper()
	s := &JWKSServer{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/jwks.json", func(w http.ResponseWriter, _ *http.Request) {
		s.hits.Add(1)
		body, err := json.Marshal(i.PublicSet())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(body)
	})
	srv := httptest.NewServer(mux) // listens on 127.0.0.1
	tb.Cleanup(srv.Close)
	s.URL = srv.URL + "/.well-known/jwks.json"
	return s
}
