// Package authn verifies the tokens identity issues (EdDSA JWTs, see docs/design.md) and turns
// them into claims.Claims. It owns everything that decides whether a token is genuine and still
// honoured: keys (JWKS, refreshed on an unknown kid), time with skew, issuer and audience, the
// shape of every claim, and the tenant kill switch. Authorization is pkg/authz's job.
package authn

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/pkg/claims"
)

// Defaults for VerifierConfig.
const (
	DefaultSkew      = 30 * time.Second
	DefaultCacheSize = 10_000
	DefaultCacheTTL  = time.Minute
	// MaxTokenBytes bounds what is parsed at all; identity's tokens are well under 2 KiB.
	MaxTokenBytes = 8 << 10
)

// Claim names beyond the registered ones (docs/design.md, "Tokens").
const (
	ClaimTenant = "tid"
	ClaimRoles  = "roles"
	ClaimScope  = "scope"
	ClaimActor  = "act"
)

// VerifierConfig configures NewVerifier.
type VerifierConfig struct {
	// Issuer is identity's `iss` (BULKHEAD_ISSUER, default "bulkhead-identity"). Required.
	Issuer string
	// Audience is this service's name ("bulkhead.connection"); a token must list it in `aud`.
	// Required: a token minted for one service must not be replayable against another.
	Audience string
	// Keys supplies the public keys. Required.
	Keys KeySource
	// Tenants is the kill switch. Required. Unless it already is a *CachedTenantStatus it is
	// wrapped in one with TenantStatusTTL.
	Tenants TenantStatus
	// TenantStatusTTL is how stale a tenant's status may be (default 2s): within seconds of a
	// suspension every service refuses the tenant's tokens.
	TenantStatusTTL time.Duration
	// Skew tolerated on exp, nbf and iat (default 30s).
	Skew time.Duration
	// CacheSize is the number of verified tokens remembered (default 10,000); negative disables
	// the cache (benchmarks measure the cold path with it).
	CacheSize int
	// CacheTTL bounds how long a verified token is reused without re-checking its signature
	// (default 1m); an entry never outlives the token's exp.
	CacheTTL time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Verifier checks tokens. It is safe for concurrent use.
type Verifier struct {
	issuer, audience string
	keys             KeySource
	tenants          TenantStatus
	skew             time.Duration
	cacheTTL         time.Duration
	now              func() time.Time
	cache            *lru.Cache[[sha256.Size]byte, cachedClaims] // nil when disabled
}

type cachedClaims struct {
	c       *claims.Claims // never modified after insertion; Verify hands out copies
	expires time.Time
}

// NewVerifier checks cfg and builds a Verifier.
func NewVerifier(cfg VerifierConfig) (*Verifier, error) {
	switch {
	case cfg.Issuer == "":
		return nil, errors.New("authn: VerifierConfig.Issuer is required")
	case cfg.Audience == "":
		return nil, errors.New("authn: VerifierConfig.Audience is required")
	case cfg.Keys == nil:
		return nil, errors.New("authn: VerifierConfig.Keys is required")
	case cfg.Tenants == nil:
		return nil, errors.New("authn: VerifierConfig.Tenants is required (the tenant kill switch is part of verification)")
	}
	if cfg.Skew <= 0 {
		cfg.Skew = DefaultSkew
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = DefaultCacheSize
	}
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = DefaultCacheTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	tenants := cfg.Tenants
	if _, ok := tenants.(*CachedTenantStatus); !ok {
		cached, err := NewCachedTenantStatus(tenants, CachedTenantStatusConfig{TTL: cfg.TenantStatusTTL, Now: cfg.Now})
		if err != nil {
			return nil, err
		}
		tenants = cached
	}
	v := &Verifier{
		issuer: cfg.Issuer, audience: cfg.Audience, keys: cfg.Keys, tenants: tenants,
		skew: cfg.Skew, cacheTTL: cfg.CacheTTL, now: cfg.Now,
	}
	if cfg.CacheSize > 0 {
		c, err := lru.New[[sha256.Size]byte, cachedClaims](cfg.CacheSize)
		if err != nil {
			return nil, fmt.Errorf("authn: %w", err)
		}
		v.cache = c
	}
	return v, nil
}

// Audience returns the audience this verifier accepts.
func (v *Verifier) Audience() string { return v.audience }

// invalid is the one answer for every token problem: the caller learns that the token was
// refused, not which check failed (that would help forge the next one). The cause stays on the
// error for server-side logs and tests.
func invalid(cause error) error {
	return apierr.Unauthenticated("invalid token").WithCause(cause)
}

// Verify checks token and returns the claims it carries, with Token set to token. Errors are
// *apierr.Error: Unauthenticated for any invalid token, TenantSuspended (PermissionDenied) when
// the tenant is suspended, deleted or unknown, Unavailable when keys or tenant status cannot be
// obtained. The returned Claims is the caller's to modify.
func (v *Verifier) Verify(ctx context.Context, token string) (*claims.Claims, error) {
	if token == "" {
		return nil, apierr.Unauthenticated("missing credentials")
	}
	if len(token) > MaxTokenBytes {
		return nil, invalid(errors.New("token too large"))
	}
	// Only the compact form: exactly three parts. The JSON serialization (and its multiple
	// signatures) is never issued by identity, so it is never accepted.
	if strings.Count(token, ".") != 2 {
		return nil, invalid(errors.New("not a compact JWS"))
	}
	key := sha256.Sum256([]byte(token))
	c := v.fromCache(key)
	if c == nil {
		var err error
		c, err = v.verifySignedToken(ctx, token)
		if err != nil {
			return nil, err
		}
		v.store(key, c)
	}
	// The kill switch applies to cached tokens too: the status has its own, shorter cache.
	if c.TenantID != "" {
		state, err := v.tenants.TenantState(ctx, c.TenantID)
		if err != nil {
			return nil, apierr.Unavailable("tenant status", time.Second).WithCause(err)
		}
		if !state.Accepts(c) {
			return nil, apierr.TenantSuspended()
		}
	}
	return clone(c), nil
}

func (v *Verifier) fromCache(key [sha256.Size]byte) *claims.Claims {
	if v.cache == nil {
		return nil
	}
	e, ok := v.cache.Get(key)
	if !ok {
		return nil
	}
	if !v.now().Before(e.expires) {
		v.cache.Remove(key)
		return nil
	}
	return e.c
}

func (v *Verifier) store(key [sha256.Size]byte, c *claims.Claims) {
	if v.cache == nil {
		return
	}
	expires := v.now().Add(v.cacheTTL)
	if c.ExpiresAt.Before(expires) {
		expires = c.ExpiresAt
	}
	if v.now().Before(expires) {
		v.cache.Add(key, cachedClaims{c: c, expires: expires})
	}
}

func clone(c *claims.Claims) *claims.Claims {
	cp := *c
	cp.Roles = slices.Clone(c.Roles)
	cp.Scopes = slices.Clone(c.Scopes)
	return &cp
}

// verifySignedToken does the expensive part: signature, time, issuer, audience, claim shapes.
func (v *Verifier) verifySignedToken(ctx context.Context, token string) (*claims.Claims, error) {
	if err := canonicalSegments(token); err != nil {
		return nil, invalid(err)
	}
	set, err := v.keys.KeySet(ctx)
	if err != nil {
		return nil, apierr.Unavailable("token keys", time.Second).WithCause(err)
	}
	tok, unknownKid, err := v.parse(token, set)
	if unknownKid {
		// identity may have rotated its key since we last fetched; look once, then give up.
		// The key source rate-limits this, so invented kids cannot hammer identity.
		if rerr := v.keys.Refresh(ctx); rerr != nil {
			return nil, invalid(fmt.Errorf("unknown kid, refresh: %w", rerr))
		}
		if set, err = v.keys.KeySet(ctx); err != nil {
			return nil, apierr.Unavailable("token keys", time.Second).WithCause(err)
		}
		tok, _, err = v.parse(token, set)
	}
	if err != nil {
		return nil, invalid(err)
	}
	c, err := toClaims(tok)
	if err != nil {
		return nil, invalid(err)
	}
	c.Token = token
	return c, nil
}

// canonicalSegments refuses segments that are not canonical unpadded base64url. jwx builds the
// signing input by re-encoding the decoded segments, so a variant spelling of a genuine token
// (different unused trailing bits, padding, '+' or '/') would verify although that string was
// never signed — found by FuzzVerify. One token must have one spelling: it is a cache key.
func canonicalSegments(token string) error {
	for seg := range strings.SplitSeq(token, ".") {
		if _, err := base64.RawURLEncoding.Strict().DecodeString(seg); err != nil {
			return fmt.Errorf("segment is not canonical base64url: %w", err)
		}
	}
	return nil
}

var (
	errAlg        = errors.New("alg is not EdDSA")
	errNoKid      = errors.New("token has no kid")
	errUnknownKid = errors.New("unknown kid")
)

func (v *Verifier) parse(token string, set jwk.Set) (tok jwt.Token, unknownKid bool, err error) {
	// The key provider chooses the key from the header's kid and refuses any alg but EdDSA
	// before a key is ever offered: the header is attacker-controlled, so "none", HS256 with the
	// public key as secret, or RS256 never reach a verifier.
	kp := jws.KeyProviderFunc(func(_ context.Context, sink jws.KeySink, sig *jws.Signature, _ *jws.Message) error {
		h := sig.ProtectedHeaders()
		alg, ok := h.Algorithm()
		if !ok || alg.String() != jwa.EdDSA().String() {
			return errAlg
		}
		kid, ok := h.KeyID()
		if !ok || kid == "" {
			return errNoKid
		}
		k, ok := set.LookupKeyID(kid)
		if !ok {
			unknownKid = true
			return errUnknownKid
		}
		pub, err := ed25519Key(k)
		if err != nil {
			return err
		}
		sink.Key(jwa.EdDSA(), pub)
		return nil
	})
	tok, err = jwt.ParseString(token,
		jwt.WithKeyProvider(kp),
		jwt.WithIssuer(v.issuer),
		jwt.WithAudience(v.audience),
		jwt.WithAcceptableSkew(v.skew),
		jwt.WithClock(jwt.ClockFunc(v.now)),
		jwt.WithRequiredClaim(jwt.ExpirationKey),
		jwt.WithRequiredClaim(jwt.JwtIDKey),
		jwt.WithRequiredClaim(jwt.SubjectKey),
	)
	return tok, unknownKid, err
}

// ed25519Key accepts only an Ed25519 public key meant for signatures.
func ed25519Key(k jwk.Key) (ed25519.PublicKey, error) {
	if alg, ok := k.Algorithm(); ok && alg.String() != jwa.EdDSA().String() {
		return nil, fmt.Errorf("key alg %s is not EdDSA", alg)
	}
	if use, ok := k.KeyUsage(); ok && use != "sig" {
		return nil, fmt.Errorf("key use %q is not sig", use)
	}
	var pub ed25519.PublicKey
	if err := jwk.Export(k, &pub); err != nil {
		return nil, fmt.Errorf("key is not an Ed25519 public key: %w", err)
	}
	if len(pub) != ed25519.PublicKeySize {
		return nil, errors.New("bad Ed25519 public key size")
	}
	return pub, nil
}

// nameRE is what a service or operator name may look like.
var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// toClaims checks the shape of every claim Bulkhead reads; a claim of the wrong type refuses
// the token rather than being ignored, since "ignored" can mean "fewer restrictions".
func toClaims(tok jwt.Token) (*claims.Claims, error) {
	sub, _ := tok.Subject()
	kind, id, ok := claims.ParseSubject(sub)
	if !ok {
		return nil, fmt.Errorf("malformed sub %q", sub)
	}
	switch kind {
	case claims.KindUser, claims.KindServiceAccount:
		if _, err := uuid.Parse(id); err != nil {
			return nil, fmt.Errorf("malformed sub %q: id is not a UUID", sub)
		}
	default:
		if !nameRE.MatchString(id) {
			return nil, fmt.Errorf("malformed sub %q: bad name", sub)
		}
	}
	jti, _ := tok.JwtID()
	if jti == "" {
		return nil, errors.New("empty jti")
	}
	exp, _ := tok.Expiration()
	c := &claims.Claims{Subject: id, Kind: kind, TokenID: jti, ExpiresAt: exp}

	if tok.Has(ClaimTenant) {
		var tid string
		if err := tok.Get(ClaimTenant, &tid); err != nil {
			return nil, fmt.Errorf("tid: %w", err)
		}
		u, err := uuid.Parse(tid)
		if err != nil {
			return nil, fmt.Errorf("tid is not a UUID")
		}
		// Canonical form, so one tenant is one string in caches, logs and SQL settings.
		c.TenantID = u.String()
	}
	if (kind == claims.KindUser || kind == claims.KindServiceAccount) && c.TenantID == "" {
		return nil, errors.New("tenant principal without tid")
	}
	if tok.Has(ClaimRoles) {
		var raw any
		if err := tok.Get(ClaimRoles, &raw); err != nil {
			return nil, fmt.Errorf("roles: %w", err)
		}
		list, ok := raw.([]any)
		if !ok {
			return nil, errors.New("roles is not an array")
		}
		for _, r := range list {
			s, ok := r.(string)
			if !ok || s == "" {
				return nil, errors.New("roles holds a non-string")
			}
			c.Roles = append(c.Roles, s)
		}
	}
	if tok.Has(ClaimScope) {
		var scope string
		if err := tok.Get(ClaimScope, &scope); err != nil {
			return nil, fmt.Errorf("scope is not a string: %w", err)
		}
		c.Scopes = strings.Fields(scope)
	}
	if tok.Has(ClaimActor) {
		var raw any
		if err := tok.Get(ClaimActor, &raw); err != nil {
			return nil, fmt.Errorf("act: %w", err)
		}
		m, ok := raw.(map[string]any)
		if !ok {
			return nil, errors.New("act is not an object")
		}
		actor, _ := m["sub"].(string)
		if _, _, ok := claims.ParseSubject(actor); !ok {
			return nil, errors.New("act.sub is malformed")
		}
		c.Actor = actor
	}
	return c, nil
}
