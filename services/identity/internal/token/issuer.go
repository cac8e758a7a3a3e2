package token

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode"

	"github.com/google/uuid"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/bulkhead/bulkhead/pkg/authn"
	"github.com/bulkhead/bulkhead/pkg/claims"
)

// Token lifetimes (docs/design.md: exp is 5–15 minutes after issue).
const (
	MinTTL     = 5 * time.Minute
	MaxTTL     = 15 * time.Minute
	DefaultTTL = 10 * time.Minute
)

// DefaultIssuer is the `iss` of identity's tokens unless configured (BULKHEAD_ISSUER).
const DefaultIssuer = "bulkhead-identity"

// ErrInvalidGrant means a Grant cannot become a token. Grants are built by identity's own use
// cases from verified credentials, so this is a bug, not a client error.
var ErrInvalidGrant = errors.New("token: invalid grant")

// IssuerConfig configures NewIssuer.
type IssuerConfig struct {
	// Issuer is the `iss` claim (default DefaultIssuer); verifiers are configured with the same.
	Issuer string
	// DefaultTTL is the lifetime of a token whose Grant has no TTL (default DefaultTTL). It must
	// lie within [MinTTL, MaxTTL].
	DefaultTTL time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Grant is what a token says: who, in which tenant, with what, for which services.
type Grant struct {
	// Kind and Subject make `sub` ("user:<uuid>", "sa:<uuid>", "svc:<name>", "op:<name>").
	Kind    claims.Kind
	Subject string
	// TenantID is the tenant UUID (`tid`). Required for users and service accounts; empty for a
	// service or operator acting on no tenant.
	TenantID string
	// Roles are tenant roles (users); Scopes are permissions (service accounts, services,
	// operators), sent space-separated in `scope`.
	Roles  []string
	Scopes []string
	// Audience lists the services the token is for (`aud`, always a JSON array). Required.
	Audience []string
	// Actor is the service acting for the subject, e.g. "svc:connection" (RFC 8693 `act.sub`),
	// for tokens obtained through token exchange; empty otherwise.
	Actor string
	// TTL is the token's lifetime; zero means the issuer's default. Outside [MinTTL, MaxTTL] it
	// is refused.
	TTL time.Duration
}

// Issuer signs tokens with the key ring's current key. It is safe for concurrent use.
type Issuer struct {
	keys       *Keyring
	issuer     string
	defaultTTL time.Duration
	now        func() time.Time
}

// NewIssuer checks cfg and returns an Issuer signing with keys.
func NewIssuer(keys *Keyring, cfg IssuerConfig) (*Issuer, error) {
	if keys == nil {
		return nil, errors.New("token: NewIssuer needs a key ring")
	}
	if cfg.Issuer == "" {
		cfg.Issuer = DefaultIssuer
	}
	if cfg.DefaultTTL == 0 {
		cfg.DefaultTTL = DefaultTTL
	}
	if cfg.DefaultTTL < MinTTL || cfg.DefaultTTL > MaxTTL {
		return nil, fmt.Errorf("token: default token TTL %s is outside [%s, %s]", cfg.DefaultTTL, MinTTL, MaxTTL)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Issuer{keys: keys, issuer: cfg.Issuer, defaultTTL: cfg.DefaultTTL, now: cfg.Now}, nil
}

// Issuer returns the `iss` this issuer signs with.
func (i *Issuer) Issuer() string { return i.issuer }

// Issue signs a token for g and returns it with its expiry. Errors wrap ErrInvalidGrant for a
// grant that breaks the token format (checked before signing, with the same rules pkg/authn
// verifies), or come from the key ring (ErrNoSigningKey, a failed reload).
func (i *Issuer) Issue(ctx context.Context, g Grant) (string, time.Time, error) {
	ttl, err := i.check(&g)
	if err != nil {
		return "", time.Time{}, err
	}
	key, err := i.keys.signer(ctx)
	if err != nil {
		return "", time.Time{}, err
	}
	// NumericDate has whole seconds: truncate first so the expiry returned is the one signed.
	now := i.now().Truncate(time.Second)
	exp := now.Add(ttl)

	b := jwt.NewBuilder().
		Issuer(i.issuer).
		Subject(string(g.Kind) + ":" + g.Subject).
		Audience(g.Audience).
		JwtID(uuid.NewString()).
		IssuedAt(now).
		NotBefore(now).
		Expiration(exp)
	if g.TenantID != "" {
		b = b.Claim(authn.ClaimTenant, g.TenantID)
	}
	if len(g.Roles) > 0 {
		b = b.Claim(authn.ClaimRoles, g.Roles)
	}
	if len(g.Scopes) > 0 {
		b = b.Claim(authn.ClaimScope, strings.Join(g.Scopes, " "))
	}
	if g.Actor != "" {
		b = b.Claim(authn.ClaimActor, actorClaim{Sub: g.Actor})
	}
	tok, err := b.Build()
	if err != nil {
		return "", time.Time{}, fmt.Errorf("token: build claims: %w", err)
	}
	// The header is {"alg":"EdDSA","kid":…,"typ":"JWT"}. It is built per call because jwx does
	// not document headers as safe to share between concurrent signatures.
	hdr := jws.NewHeaders()
	if err := hdr.Set(jws.KeyIDKey, key.kid); err != nil {
		return "", time.Time{}, fmt.Errorf("token: header: %w", err)
	}
	if err := hdr.Set(jws.TypeKey, "JWT"); err != nil {
		return "", time.Time{}, fmt.Errorf("token: header: %w", err)
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.EdDSA(), key.priv, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		return "", time.Time{}, fmt.Errorf("token: sign: %w", err)
	}
	return string(signed), exp, nil
}

// actorClaim is the RFC 8693 `act` object.
type actorClaim struct {
	Sub string `json:"sub"`
}

// nameRE is what a service or operator name may look like; pkg/authn refuses any other.
var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// check validates g (normalizing ids to canonical UUID form) and returns its TTL.
func (i *Issuer) check(g *Grant) (time.Duration, error) {
	bad := func(format string, args ...any) (time.Duration, error) {
		return 0, fmt.Errorf("%w: "+format, append([]any{ErrInvalidGrant}, args...)...)
	}
	switch g.Kind {
	case claims.KindUser, claims.KindServiceAccount:
		id, err := uuid.Parse(g.Subject)
		if err != nil || id == uuid.Nil {
			return bad("%s subject %q is not a UUID", g.Kind, g.Subject)
		}
		g.Subject = id.String()
		if g.TenantID == "" {
			return bad("%s subject needs a tenant", g.Kind)
		}
	case claims.KindService, claims.KindOperator:
		if !nameRE.MatchString(g.Subject) {
			return bad("%s subject %q is not a valid name", g.Kind, g.Subject)
		}
	default:
		return bad("unknown subject kind %q", g.Kind)
	}
	if g.TenantID != "" {
		t, err := uuid.Parse(g.TenantID)
		if err != nil || t == uuid.Nil {
			return bad("tenant %q is not a UUID", g.TenantID)
		}
		g.TenantID = t.String()
	}
	if len(g.Audience) == 0 {
		return bad("no audience")
	}
	for _, a := range g.Audience {
		if a == "" {
			return bad("empty audience")
		}
	}
	for _, r := range g.Roles {
		if r == "" {
			return bad("empty role")
		}
	}
	for _, s := range g.Scopes {
		// Scopes travel space-separated: one with a space would turn into two.
		if s == "" || strings.ContainsFunc(s, unicode.IsSpace) {
			return bad("scope %q is empty or contains a space", s)
		}
	}
	if g.Actor != "" {
		kind, name, ok := claims.ParseSubject(g.Actor)
		if !ok || kind != claims.KindService || !nameRE.MatchString(name) {
			return bad("actor %q is not a service (svc:<name>)", g.Actor)
		}
	}
	ttl := g.TTL
	if ttl == 0 {
		ttl = i.defaultTTL
	}
	if ttl < MinTTL || ttl > MaxTTL {
		return bad("TTL %s is outside [%s, %s]", ttl, MinTTL, MaxTTL)
	}
	return ttl, nil
}
