package token_test

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bulkhead/bulkhead/pkg/authn"
	"github.com/bulkhead/bulkhead/pkg/claims"

	"github.com/bulkhead/bulkhead/services/identity/internal/token"
)

// compact encodes header and payload and appends the signature sign makes over them: the
// attacker's side of the refusal table, written by hand on purpose (a JOSE library would refuse
// to produce most of these tokens).
func compact(t *testing.T, header, payload map[string]any, sign func(signingInput []byte) []byte) string {
	t.Helper()
	enc := func(v map[string]any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	input := enc(header) + "." + enc(payload)
	return input + "." + base64.RawURLEncoding.EncodeToString(sign([]byte(input)))
}

// TestRefusedTokens is the refusal table of the identity issue: each token is refused by
// pkg/authn's verifier configured as identity configures it, with codes.Unauthenticated.
func TestRefusedTokens(t *testing.T) {
	t.Parallel()
	clk := newClock()
	keys := replica(t, newDB(t), newKEK(t), clk)
	iss := newIssuer(t, keys, clk)
	v := identityVerifier(t, keys, clk)
	ctx := context.Background()

	tenantA, tenantB, user := uuid.NewString(), uuid.NewString(), uuid.NewString()
	grant := token.Grant{Kind: claims.KindUser, Subject: user, TenantID: tenantA, Roles: []string{"owner"}, Audience: []string{identityAudience}}
	valid := issue(t, iss, grant)
	kid := keys.CurrentKID()

	// The current public key, as published: what an attacker has.
	set, err := keys.KeySet(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pubJWK, ok := set.LookupKeyID(kid)
	if !ok {
		t.Fatalf("current kid %s not in the key set", kid)
	}
	var pub ed25519.PublicKey
	if err := jwk.Export(pubJWK, &pub); err != nil {
		t.Fatal(err)
	}
	pubJSON, err := json.Marshal(pubJWK)
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	validPayload := decodePart(t, valid, 1)
	edHeader := func(kid string) map[string]any { return map[string]any{"alg": "EdDSA", "typ": "JWT", "kid": kid} }
	hs256 := func(secret []byte) string {
		return compact(t, map[string]any{"alg": "HS256", "typ": "JWT", "kid": kid}, validPayload, func(in []byte) []byte {
			m := hmac.New(sha256.New, secret)
			m.Write(in)
			return m.Sum(nil)
		})
	}
	withIssuer := func(name string) *token.Issuer {
		i, err := token.NewIssuer(keys, token.IssuerConfig{Issuer: name, Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		return i
	}
	issuerAt := func(offset time.Duration) *token.Issuer {
		i, err := token.NewIssuer(keys, token.IssuerConfig{Now: func() time.Time { return clk.Now().Add(offset) }})
		if err != nil {
			t.Fatal(err)
		}
		return i
	}
	// Beyond the verifier's skew in either direction.
	beyondSkew := authn.DefaultSkew + time.Second

	tests := []struct {
		name  string
		token string
	}{
		{"expired", issue(t, issuerAt(-token.DefaultTTL-beyondSkew), grant)},
		{"not yet valid", issue(t, issuerAt(beyondSkew), grant)},
		{"wrong audience", issue(t, iss, token.Grant{Kind: claims.KindUser, Subject: user, TenantID: tenantA, Audience: []string{"bulkhead.connection"}})},
		{"wrong issuer", issue(t, withIssuer("not-bulkhead-identity"), grant)},
		{"alg none", compact(t, map[string]any{"alg": "none", "typ": "JWT", "kid": kid}, validPayload, func([]byte) []byte { return nil })},
		{"alg none without kid", compact(t, map[string]any{"alg": "none", "typ": "JWT"}, validPayload, func([]byte) []byte { return nil })},
		{"HS256 keyed with the public key bytes", hs256(pub)},
		{"HS256 keyed with the public JWK", hs256(pubJSON)},
		{"unknown kid", compact(t, edHeader("no-such-kid-"+uuid.NewString()), validPayload, func(in []byte) []byte { return ed25519.Sign(otherKey, in) })},
		{"tampered tid", func() string {
			p := decodePart(t, valid, 1)
			p["tid"] = tenantB
			b, err := json.Marshal(p)
			if err != nil {
				t.Fatal(err)
			}
			parts := strings.Split(valid, ".")
			return parts[0] + "." + base64.RawURLEncoding.EncodeToString(b) + "." + parts[2]
		}()},
		{"signed by another key under the known kid", compact(t, edHeader(kid), validPayload, func(in []byte) []byte { return ed25519.Sign(otherKey, in) })},
		{"signature of another genuine token", func() string {
			other := issue(t, iss, token.Grant{Kind: claims.KindUser, Subject: user, TenantID: tenantB, Audience: []string{identityAudience}})
			p := strings.Split(valid, ".")
			return p[0] + "." + p[1] + "." + strings.Split(other, ".")[2]
		}()},
	}
	if _, err := v.Verify(ctx, valid); err != nil {
		t.Fatalf("the untampered token is refused, so the table proves nothing: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := v.Verify(ctx, tt.token)
			if got := status.Code(err); got != codes.Unauthenticated {
				t.Fatalf("Verify = %+v, %v (code %s); want Unauthenticated", c, err, got)
			}
			t.Logf("refused: %v", err) // the cause, for whoever reads -v output; not asserted

		})
	}
}
