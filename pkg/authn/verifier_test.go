package authn_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/pkg/authn"
	"github.com/bulkhead/bulkhead/pkg/authn/authntest"
	"github.com/bulkhead/bulkhead/pkg/claims"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	audience = "bulkhead.connection"
	tenantA  = "3b0f1f8e-5d8e-4c4b-9a51-7b9e2f7d0a01"
	tenantB  = "3b0f1f8e-5d8e-4c4b-9a51-7b9e2f7d0a02"
)

var userID = uuid.NewString()

// tenants is an in-memory kill switch: a real implementation of the interface (identity's will
// read Postgres), with a call counter.
type tenants struct {
	mu       sync.Mutex
	active   map[string]bool
	deleting map[string]bool
	err      error
	calls    atomic.Int64
}

func newTenants(active ...string) *tenants {
	t := &tenants{active: map[string]bool{}, deleting: map[string]bool{}}
	for _, id := range active {
		t.active[id] = true
	}
	return t
}

func (t *tenants) TenantState(_ context.Context, id string) (authn.TenantState, error) {
	t.calls.Add(1)
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.err != nil:
		return authn.StateInactive, t.err
	case t.active[id]:
		return authn.StateActive, nil
	case t.deleting[id]:
		return authn.StateDeleting, nil
	default:
		return authn.StateInactive, nil
	}
}

func (t *tenants) setDeleting(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.active[id], t.deleting[id] = false, true
}

func (t *tenants) set(id string, active bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.active[id] = active
}

// clock is a settable time source shared by the verifier and the token minting.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type fixture struct {
	iss     *authntest.Issuer
	jwks    *authntest.JWKSServer
	keys    *authn.RemoteKeys
	tenants *tenants
	clock   *clock
	v       *authn.Verifier
}

// newFixture builds a verifier reading the issuer's JWKS over real HTTP on loopback.
func newFixture(t *testing.T, cfg authn.VerifierConfig) *fixture {
	t.Helper()
	f := &fixture{iss: authntest.NewIssuer(t), tenants: newTenants(tenantA), clock: &clock{t: time.Now()}}
	f.jwks = f.iss.ServeJWKS(t)
	keys, err := authn.NewRemoteKeys(context.Background(), authn.RemoteKeysConfig{URL: f.jwks.URL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = keys.Close(context.Background()) })
	f.keys = keys
	cfg.Issuer, cfg.Audience, cfg.Keys, cfg.Tenants, cfg.Now = authntest.DefaultIssuer, audience, keys, f.tenants, f.clock.Now
	f.v, err = authn.NewVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) user(mod func(*authntest.Token)) authntest.Token {
	tok := authntest.Token{
		Subject: "user:" + userID, TenantID: tenantA, Audience: []string{audience},
		Roles: []string{"member"}, IssuedAt: f.clock.Now(),
	}
	if mod != nil {
		mod(&tok)
	}
	return tok
}

func b64(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// signRaw signs payload (JSON claims) under an arbitrary alg/key with kid in the header.
func signRaw(t *testing.T, alg jwa.SignatureAlgorithm, key any, kid string, payload map[string]any) string {
	t.Helper()
	hdr := jws.NewHeaders()
	if kid != "" {
		if err := hdr.Set(jws.KeyIDKey, kid); err != nil {
			t.Fatal(err)
		}
	}
	body, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jws.Sign(body, jws.WithKey(alg, key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// flipUnusedBits respells a base64url segment whose last character carries unused bits (an
// Ed25519 signature: 64 bytes, 86 characters) so that it decodes to the same bytes.
func flipUnusedBits(seg string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, seg[len(seg)-1])
	return seg[:len(seg)-1] + string(alphabet[last^1])
}

// rawSigningKey is the issuer's private key without its JWK headers (so no kid is emitted).
func rawSigningKey(t *testing.T, iss *authntest.Issuer) ed25519.PrivateKey {
	t.Helper()
	var priv ed25519.PrivateKey
	if err := jwk.Export(iss.SigningKey(), &priv); err != nil {
		t.Fatal(err)
	}
	return priv
}

func (f *fixture) payload(mod func(map[string]any)) map[string]any {
	now := f.clock.Now()
	p := map[string]any{
		"iss": authntest.DefaultIssuer, "aud": []string{audience}, "sub": "user:" + userID, "tid": tenantA,
		"roles": []string{"owner"}, "jti": uuid.NewString(),
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(10 * time.Minute).Unix(),
	}
	if mod != nil {
		mod(p)
	}
	return p
}

func TestVerifyAcceptsValidTokens(t *testing.T) {
	f := newFixture(t, authn.VerifierConfig{})
	ctx := context.Background()

	tok := f.iss.MustMint(t, f.user(func(tk *authntest.Token) {
		tk.Roles = []string{"member", "viewer"}
		tk.Actor = "svc:connection"
		tk.ID = "jti-1"
		tk.Audience = []string{"bulkhead.identity", audience}
	}))
	c, err := f.v.Verify(ctx, tok)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	want := claims.Claims{
		TenantID: tenantA, Subject: userID, Kind: claims.KindUser, Roles: []string{"member", "viewer"},
		TokenID: "jti-1", Actor: "svc:connection", Token: tok,
	}
	if c.TenantID != want.TenantID || c.Subject != want.Subject || c.Kind != want.Kind || c.TokenID != want.TokenID ||
		c.Actor != want.Actor || c.Token != want.Token || strings.Join(c.Roles, ",") != "member,viewer" || c.Caller != "" {
		t.Fatalf("claims = %+v, want %+v", c, want)
	}
	if c.ExpiresAt.IsZero() {
		t.Fatal("ExpiresAt not set")
	}

	svc := f.iss.MustMint(t, authntest.Token{Subject: "svc:connection", Audience: []string{audience}, Scope: "credentials.read  tokens.exchange", IssuedAt: f.clock.Now()})
	c, err = f.v.Verify(ctx, svc)
	if err != nil {
		t.Fatalf("service token: %v", err)
	}
	if c.Kind != claims.KindService || c.Subject != "connection" || c.TenantID != "" || strings.Join(c.Scopes, ",") != "credentials.read,tokens.exchange" {
		t.Fatalf("service claims = %+v", c)
	}
	if n := f.tenants.calls.Load(); n != 1 {
		t.Fatalf("tenant status asked %d times, want 1 (user token only; none for a no-tenant service)", n)
	}
}

func TestVerifyRefusals(t *testing.T) {
	f := newFixture(t, authn.VerifierConfig{Skew: 30 * time.Second, CacheSize: -1})
	now := f.clock.Now()
	pub := f.iss.PublicSet()
	pubKey, _ := pub.Key(0)
	var rawPub ed25519.PublicKey
	if err := jwk.Export(pubKey, &rawPub); err != nil {
		t.Fatal(err)
	}
	_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	valid := f.iss.MustMint(t, f.user(nil))
	parts := strings.Split(valid, ".")

	mint := func(mod func(*authntest.Token)) string { return f.iss.MustMint(t, f.user(mod)) }
	cases := []struct {
		name   string
		token  string
		code   codes.Code
		reason string
	}{
		{"empty", "", codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"garbage", "not-a-token", codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"three garbage parts", "a.b.c", codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"json serialization", `{"payload":"` + parts[1] + `","signatures":[]}`, codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"too large", valid + strings.Repeat("A", authn.MaxTokenBytes), codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"truncated", valid[:len(valid)-10], codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"expired", mint(func(t *authntest.Token) { t.IssuedAt = now.Add(-20 * time.Minute) }), codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"expired beyond skew", mint(func(t *authntest.Token) { t.IssuedAt = now.Add(-10*time.Minute - 31*time.Second) }), codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"not yet valid", mint(func(t *authntest.Token) { t.Set = map[string]any{"nbf": now.Add(5 * time.Minute)} }), codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"issued in the future", mint(func(t *authntest.Token) { t.IssuedAt = now.Add(5 * time.Minute) }), codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"wrong audience", mint(func(t *authntest.Token) { t.Audience = []string{"bulkhead.vaultbroker"} }), codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"no audience", mint(func(t *authntest.Token) { t.Audience = nil }), codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"wrong issuer", mint(func(t *authntest.Token) { t.Set = map[string]any{"iss": "evil-identity"} }), codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"missing exp", mint(func(t *authntest.Token) { t.Omit = []string{"exp"} }), codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"missing jti", mint(func(t *authntest.Token) { t.Omit = []string{"jti"} }), codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"missing sub", mint(func(t *authntest.Token) { t.Omit = []string{"sub"} }), codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"sub unknown kind", mint(func(t *authntest.Token) { t.Subject = "robot:" + userID }), codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"sub without id", mint(func(t *authntest.Token) { t.Subject = "user:" }), codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"sub without kind", mint(func(t *authntest.Token) { t.Subject = userID }), codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"user sub not a uuid", mint(func(t *authntest.Token) { t.Subject = "user:alice" }), codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"service name with spaces", mint(func(t *authntest.Token) { t.Subject = "svc:con nection"; t.TenantID = "" }), codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"user without tenant", mint(func(t *authntest.Token) { t.TenantID = "" }), codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"tenant not a uuid", mint(func(t *authntest.Token) { t.TenantID = "acme" }), codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"tenant a number", mint(func(t *authntest.Token) { t.Set = map[string]any{"tid": 42} }), codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"roles a string", mint(func(t *authntest.Token) { t.Roles = nil; t.Set = map[string]any{"roles": "owner"} }), codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"roles with a number", mint(func(t *authntest.Token) { t.Roles = nil; t.Set = map[string]any{"roles": []any{"owner", 1}} }), codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"scope an array", mint(func(t *authntest.Token) { t.Set = map[string]any{"scope": []string{"records.read"}} }), codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"act malformed", mint(func(t *authntest.Token) { t.Set = map[string]any{"act": map[string]any{"sub": "nobody"}} }), codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"alg none", b64(map[string]string{"alg": "none", "kid": "test-1", "typ": "JWT"}) + "." + b64(f.payload(nil)) + ".", codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"alg none with valid signature kept", b64(map[string]string{"alg": "none", "kid": "test-1"}) + "." + parts[1] + "." + parts[2], codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"HS256 signed with the public key", signRaw(t, jwa.HS256(), []byte(rawPub), "test-1", f.payload(nil)), codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"ES256 under our kid", signRaw(t, jwa.ES256(), ecKey, "test-1", f.payload(nil)), codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"EdDSA by another key under our kid", signRaw(t, jwa.EdDSA(), otherPriv, "test-1", f.payload(nil)), codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"EdDSA by another key, unknown kid", signRaw(t, jwa.EdDSA(), otherPriv, "attacker", f.payload(nil)), codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"no kid", signRaw(t, jwa.EdDSA(), rawSigningKey(t, f.iss), "", f.payload(nil)), codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"tampered payload", parts[0] + "." + b64(f.payload(func(p map[string]any) { p["roles"] = []string{"owner"} })) + "." + parts[2], codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"tampered tenant", parts[0] + "." + b64(f.payload(func(p map[string]any) { p["tid"] = tenantB })) + "." + parts[2], codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"signature spelled non-canonically", parts[0] + "." + parts[1] + "." + flipUnusedBits(parts[2]), codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"padded segments", parts[0] + "." + parts[1] + "." + parts[2] + "==", codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"signature stripped", parts[0] + "." + parts[1] + ".", codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"suspended or unknown tenant", mint(func(t *authntest.Token) { t.TenantID = tenantB }), codes.PermissionDenied, apierr.ReasonTenantSuspended},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := f.v.Verify(context.Background(), tc.token)
			if err == nil {
				t.Fatalf("accepted: %+v", c)
			}
			if got := status.Code(err); got != tc.code {
				t.Fatalf("code = %v, want %v (%v)", got, tc.code, err)
			}
			if !apierr.Is(err, tc.reason) {
				t.Fatalf("reason of %v is not %s", err, tc.reason)
			}
			// The client sees a vague message, never the cause.
			if st := status.Convert(err); tc.code == codes.Unauthenticated && st.Message() != "invalid token" && st.Message() != "missing credentials" {
				t.Fatalf("message %q reveals detail", st.Message())
			}
		})
	}
	// Sanity: the token the tampered cases started from is itself good.
	if _, err := f.v.Verify(context.Background(), valid); err != nil {
		t.Fatalf("baseline token refused: %v", err)
	}
	// Skew works in the accepting direction too.
	late := mint(func(t *authntest.Token) { t.IssuedAt = now.Add(-10*time.Minute - 10*time.Second) })
	if _, err := f.v.Verify(context.Background(), late); err != nil {
		t.Fatalf("token expired 10s ago refused despite 30s skew: %v", err)
	}
}

func TestKeyRotationRefreshesOnUnknownKid(t *testing.T) {
	f := newFixture(t, authn.VerifierConfig{})
	ctx := context.Background()
	if _, err := f.v.Verify(ctx, f.iss.MustMint(t, f.user(nil))); err != nil {
		t.Fatal(err)
	}
	before := f.jwks.Hits()
	f.iss.Rotate(t, "test-2")
	rotated := f.iss.MustMint(t, f.user(nil))
	if _, err := f.v.Verify(ctx, rotated); err != nil {
		t.Fatalf("token under the new kid refused: %v", err)
	}
	if got := f.jwks.Hits() - before; got != 1 {
		t.Fatalf("JWKS fetched %d times for the new kid, want 1", got)
	}
}

func TestUnknownKidFloodCannotHammerIdentity(t *testing.T) {
	f := newFixture(t, authn.VerifierConfig{})
	ctx := context.Background()
	if _, err := f.v.Verify(ctx, f.iss.MustMint(t, f.user(nil))); err != nil {
		t.Fatal(err)
	}
	before := f.jwks.Hits()
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			_, priv, _ := ed25519.GenerateKey(rand.Reader)
			tok := signRaw(t, jwa.EdDSA(), priv, fmt.Sprintf("garbage-%d", i), f.payload(nil))
			if _, err := f.v.Verify(ctx, tok); status.Code(err) != codes.Unauthenticated {
				t.Errorf("garbage kid: %v", err)
			}
		})
	}
	wg.Wait()
	if got := f.jwks.Hits() - before; got > 1 {
		t.Fatalf("200 unknown kids caused %d JWKS fetches, want at most 1", got)
	}
}

func TestKillSwitchAppliesToCachedTokens(t *testing.T) {
	f := newFixture(t, authn.VerifierConfig{TenantStatusTTL: 2 * time.Second, CacheTTL: time.Minute})
	ctx := context.Background()
	tok := f.iss.MustMint(t, f.user(nil))
	for range 3 {
		if _, err := f.v.Verify(ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.tenants.calls.Load(); n != 1 {
		t.Fatalf("tenant status asked %d times within its TTL, want 1", n)
	}
	f.tenants.set(tenantA, false)
	// Within the TTL the old answer may still be used: that is the documented bound.
	f.clock.Advance(2 * time.Second)
	_, err := f.v.Verify(ctx, tok)
	if !apierr.Is(err, apierr.ReasonTenantSuspended) || status.Code(err) != codes.PermissionDenied {
		t.Fatalf("suspended tenant's cached token: %v, want TenantSuspended", err)
	}
	f.tenants.set(tenantA, true)
	f.clock.Advance(2 * time.Second)
	if _, err := f.v.Verify(ctx, tok); err != nil {
		t.Fatalf("reactivated tenant refused: %v", err)
	}
}

// A DELETING tenant is refused like a suspended one, except for a Bulkhead service's token
// carrying tenants.offboard: the services finishing the tenant's offboarding.
func TestDeletingTenantAdmitsOnlyOffboardingServices(t *testing.T) {
	f := newFixture(t, authn.VerifierConfig{})
	f.tenants.setDeleting(tenantA)
	tests := []struct {
		name   string
		mod    func(*authntest.Token)
		accept bool
	}{
		{"owner", func(tk *authntest.Token) { tk.Roles = []string{"owner"} }, false},
		{"user carrying the scope", func(tk *authntest.Token) { tk.Scope = "tenants.offboard" }, false},
		{"service account carrying the scope", func(tk *authntest.Token) {
			tk.Subject, tk.Roles, tk.Scope = "sa:"+uuid.NewString(), nil, "tenants.offboard connections.manage"
		}, false},
		{"service without the scope", func(tk *authntest.Token) {
			tk.Subject, tk.Roles, tk.Scope = "svc:sync", nil, "connections.use credentials.read"
		}, false},
		{"service with the scope", func(tk *authntest.Token) {
			tk.Subject, tk.Roles, tk.Scope = "svc:connection", nil, "credentials.write tenants.offboard"
		}, true},
		{"operator with the scope", func(tk *authntest.Token) {
			tk.Subject, tk.Roles, tk.Scope = "op:alice", nil, "tenants.offboard"
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.v.Verify(context.Background(), f.iss.MustMint(t, f.user(tt.mod)))
			if tt.accept && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tt.accept && !apierr.Is(err, apierr.ReasonTenantSuspended) {
				t.Fatalf("got %v, want TenantSuspended", err)
			}
		})
	}
	// Once offboarding is over (DELETED), even the service is refused.
	f.tenants.mu.Lock()
	f.tenants.deleting[tenantA] = false
	f.tenants.mu.Unlock()
	f.clock.Advance(3 * time.Second)
	_, err := f.v.Verify(context.Background(), f.iss.MustMint(t, f.user(func(tk *authntest.Token) {
		tk.Subject, tk.Roles, tk.Scope = "svc:connection", nil, "tenants.offboard"
	})))
	if !apierr.Is(err, apierr.ReasonTenantSuspended) {
		t.Fatalf("deleted tenant, service token: %v, want TenantSuspended", err)
	}
}

func TestTenantStatusErrorFailsClosed(t *testing.T) {
	f := newFixture(t, authn.VerifierConfig{})
	f.tenants.err = errors.New("identity unreachable")
	_, err := f.v.Verify(context.Background(), f.iss.MustMint(t, f.user(nil)))
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("code %v, want Unavailable", status.Code(err))
	}
}

func TestCacheNeverOutlivesToken(t *testing.T) {
	f := newFixture(t, authn.VerifierConfig{Skew: time.Second, CacheTTL: time.Hour, TenantStatusTTL: time.Hour})
	ctx := context.Background()
	tok := f.iss.MustMint(t, f.user(func(tk *authntest.Token) { tk.TTL = time.Minute }))
	if _, err := f.v.Verify(ctx, tok); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Minute + 2*time.Second)
	if _, err := f.v.Verify(ctx, tok); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("expired token served from cache: %v", err)
	}
}

func TestVerifyReturnsCopies(t *testing.T) {
	f := newFixture(t, authn.VerifierConfig{})
	ctx := context.Background()
	tok := f.iss.MustMint(t, f.user(func(tk *authntest.Token) { tk.Roles = []string{"viewer"} }))
	c1, err := f.v.Verify(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	c1.Roles[0] = "owner"
	c1.Caller = "svc:evil"
	c2, err := f.v.Verify(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	if c2.Roles[0] != "viewer" || c2.Caller != "" {
		t.Fatalf("cached claims were modified through a returned copy: %+v", c2)
	}
}

func TestLocalKeys(t *testing.T) {
	iss := authntest.NewIssuer(t)
	v, err := authn.NewVerifier(authn.VerifierConfig{
		Issuer: authntest.DefaultIssuer, Audience: "bulkhead.identity",
		Keys:    authn.KeyFunc(func(context.Context) (jwk.Set, error) { return iss.PublicSet(), nil }),
		Tenants: newTenants(tenantA),
	})
	if err != nil {
		t.Fatal(err)
	}
	tok := iss.MustMint(t, authntest.Token{Subject: "sa:" + uuid.NewString(), TenantID: tenantA, Audience: []string{"bulkhead.identity"}, Scope: "records.read"})
	c, err := v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if c.Kind != claims.KindServiceAccount {
		t.Fatalf("kind %s", c.Kind)
	}
	iss.Rotate(t, "test-2") // identity's own key ring: the func sees the new key at once
	if _, err := v.Verify(context.Background(), iss.MustMint(t, authntest.Token{Subject: "op:alice", Audience: []string{"bulkhead.identity"}})); err != nil {
		t.Fatalf("rotated key: %v", err)
	}
}

func TestRemoteKeysBeforeIdentityIsUp(t *testing.T) {
	iss := authntest.NewIssuer(t)
	var ready atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		_ = json.NewEncoder(w).Encode(iss.PublicSet())
	}))
	defer srv.Close()
	keys, err := authn.NewRemoteKeys(context.Background(), authn.RemoteKeysConfig{URL: srv.URL, MinRefreshInterval: time.Millisecond, StartupWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer keys.Close(context.Background())
	v, err := authn.NewVerifier(authn.VerifierConfig{Issuer: authntest.DefaultIssuer, Audience: audience, Keys: keys, Tenants: newTenants(tenantA)})
	if err != nil {
		t.Fatal(err)
	}
	tok := iss.MustMint(t, authntest.Token{Subject: "user:" + userID, TenantID: tenantA, Audience: []string{audience}})
	if _, err := v.Verify(context.Background(), tok); status.Code(err) != codes.Unavailable {
		t.Fatalf("before JWKS is served: %v, want Unavailable", err)
	}
	ready.Store(true)
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := v.Verify(context.Background(), tok)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still refused after identity came up: %v", err)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition with a deadline, not waiting blind
	}
}

func TestCachedTenantStatusSharesOneCall(t *testing.T) {
	inner := newTenants(tenantA)
	clk := &clock{t: time.Now()}
	c, err := authn.NewCachedTenantStatus(inner, authn.CachedTenantStatusConfig{TTL: 2 * time.Second, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if st, err := c.TenantState(context.Background(), tenantA); st != authn.StateActive || err != nil {
				t.Errorf("TenantState = %v, %v", st, err)
			}
		})
	}
	wg.Wait()
	if n := inner.calls.Load(); n > 2 { // one, or two if a waiter arrived just after the first stored
		t.Fatalf("%d calls for 50 concurrent checks", n)
	}
	before := inner.calls.Load()
	clk.Advance(2 * time.Second)
	if _, err := c.TenantState(context.Background(), tenantA); err != nil {
		t.Fatal(err)
	}
	if inner.calls.Load() != before+1 {
		t.Fatal("answer reused after its TTL")
	}
	c.Forget(tenantA)
	if _, err := c.TenantState(context.Background(), tenantA); err != nil {
		t.Fatal(err)
	}
	if inner.calls.Load() != before+2 {
		t.Fatal("Forget did not drop the answer")
	}
	// Errors are not cached.
	inner.err = errors.New("down")
	if _, err := c.TenantState(context.Background(), tenantB); err == nil {
		t.Fatal("error swallowed")
	}
	inner.err = nil
	if st, err := c.TenantState(context.Background(), tenantB); st != authn.StateInactive || err != nil {
		t.Fatalf("unknown tenant = %v, %v; want StateInactive, nil", st, err)
	}
}

func TestNewVerifierRequiresEverything(t *testing.T) {
	keys := authn.KeyFunc(func(context.Context) (jwk.Set, error) { return jwk.NewSet(), nil })
	for name, cfg := range map[string]authn.VerifierConfig{
		"issuer":   {Audience: audience, Keys: keys, Tenants: newTenants()},
		"audience": {Issuer: "i", Keys: keys, Tenants: newTenants()},
		"keys":     {Issuer: "i", Audience: audience, Tenants: newTenants()},
		"tenants":  {Issuer: "i", Audience: audience, Keys: keys},
	} {
		if _, err := authn.NewVerifier(cfg); err == nil {
			t.Errorf("missing %s accepted", name)
		}
	}
}

// Services build RemoteKeys with a start-up context and cancel it once they serve; key
// rotation must keep working afterwards.
func TestRemoteKeysOutliveTheirStartupContext(t *testing.T) {
	iss := authntest.NewIssuer(t)
	jwks := iss.ServeJWKS(t)
	startup, cancel := context.WithCancel(context.Background())
	keys, err := authn.NewRemoteKeys(startup, authn.RemoteKeysConfig{URL: jwks.URL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = keys.Close(context.Background()) })
	cancel()

	v, err := authn.NewVerifier(authn.VerifierConfig{
		Issuer: authntest.DefaultIssuer, Audience: audience, Keys: keys, Tenants: newTenants(tenantA),
	})
	if err != nil {
		t.Fatal(err)
	}
	iss.Rotate(t, "after-startup")
	tok := iss.MustMint(t, authntest.Token{
		Subject: "user:" + userID, TenantID: tenantA, Audience: []string{audience}, Roles: []string{"member"},
	})
	// Bounded: with workers tied to the cancelled start-up context the refresh never answers.
	ctx, stop := context.WithTimeout(context.Background(), 10*time.Second)
	defer stop()
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Fatalf("a key rotated in after start-up is refused: %v", err)
	}
}
