package token_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bulkhead/bulkhead/pkg/claims"

	"github.com/bulkhead/bulkhead/services/identity/internal/token"
)

// decodePart decodes one base64url part of a compact JWS into a JSON object.
func decodePart(t *testing.T, tok string, i int) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestIssueVerifyRoundTrip(t *testing.T) {
	t.Parallel()
	clk := newClock()
	keys := replica(t, newDB(t), newKEK(t), clk)
	iss := newIssuer(t, keys, clk)
	v := identityVerifier(t, keys, clk)

	tenant, user, sa := uuid.NewString(), uuid.NewString(), uuid.NewString()
	tests := []struct {
		name  string
		grant token.Grant
		want  claims.Claims
	}{
		{
			name:  "user with roles",
			grant: token.Grant{Kind: claims.KindUser, Subject: user, TenantID: tenant, Roles: []string{"owner"}, Audience: []string{identityAudience}},
			want:  claims.Claims{Kind: claims.KindUser, Subject: user, TenantID: tenant, Roles: []string{"owner"}},
		},
		{
			name:  "service account with scopes, several audiences, short TTL",
			grant: token.Grant{Kind: claims.KindServiceAccount, Subject: sa, TenantID: tenant, Scopes: []string{"connections.read", "connections.write"}, Audience: []string{"bulkhead.connection", identityAudience}, TTL: token.MinTTL},
			want:  claims.Claims{Kind: claims.KindServiceAccount, Subject: sa, TenantID: tenant, Scopes: []string{"connections.read", "connections.write"}},
		},
		{
			name:  "service without tenant",
			grant: token.Grant{Kind: claims.KindService, Subject: "connection", Scopes: []string{"tokens.exchange"}, Audience: []string{identityAudience}, TTL: token.MaxTTL},
			want:  claims.Claims{Kind: claims.KindService, Subject: "connection", Scopes: []string{"tokens.exchange"}},
		},
		{
			name:  "operator",
			grant: token.Grant{Kind: claims.KindOperator, Subject: "alice", Scopes: []string{"platform.tenants.manage"}, Audience: []string{identityAudience}},
			want:  claims.Claims{Kind: claims.KindOperator, Subject: "alice", Scopes: []string{"platform.tenants.manage"}},
		},
		{
			name:  "exchanged token records the actor",
			grant: token.Grant{Kind: claims.KindUser, Subject: user, TenantID: tenant, Roles: []string{"member"}, Audience: []string{identityAudience}, Actor: "svc:connection"},
			want:  claims.Claims{Kind: claims.KindUser, Subject: user, TenantID: tenant, Roles: []string{"member"}, Actor: "svc:connection"},
		},
		{
			name:  "ids are canonicalized",
			grant: token.Grant{Kind: claims.KindUser, Subject: strings.ToUpper(user), TenantID: strings.ToUpper(tenant), Audience: []string{identityAudience}},
			want:  claims.Claims{Kind: claims.KindUser, Subject: user, TenantID: tenant},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, exp, err := iss.Issue(context.Background(), tt.grant)
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			ttl := tt.grant.TTL
			if ttl == 0 {
				ttl = token.DefaultTTL
			}
			if want := clk.Now().Add(ttl); !exp.Equal(want) {
				t.Errorf("expiresAt = %v, want %v", exp, want)
			}

			got, err := v.Verify(context.Background(), tok)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got.Kind != tt.want.Kind || got.Subject != tt.want.Subject || got.TenantID != tt.want.TenantID ||
				got.Actor != tt.want.Actor || !slices.Equal(got.Roles, tt.want.Roles) || !slices.Equal(got.Scopes, tt.want.Scopes) {
				t.Errorf("claims = %+v, want %+v", got, tt.want)
			}
			if !got.ExpiresAt.Equal(exp) {
				t.Errorf("claims expire %v, Issue said %v", got.ExpiresAt, exp)
			}
			if _, err := uuid.Parse(got.TokenID); err != nil {
				t.Errorf("jti %q is not a UUID", got.TokenID)
			}

			hdr := decodePart(t, tok, 0)
			if hdr["alg"] != "EdDSA" || hdr["typ"] != "JWT" || hdr["kid"] != keys.CurrentKID() || len(hdr) != 3 {
				t.Errorf("header = %v, want alg EdDSA, typ JWT, kid %s", hdr, keys.CurrentKID())
			}
			payload := decodePart(t, tok, 1)
			// aud is always an array, even with one audience: verifiers must not have to guess.
			if _, ok := payload["aud"].([]any); !ok {
				t.Errorf("aud = %#v, want a JSON array", payload["aud"])
			}
			if payload["iss"] != token.DefaultIssuer {
				t.Errorf("iss = %v", payload["iss"])
			}
			iat, nbf, expClaim := payload["iat"].(float64), payload["nbf"].(float64), payload["exp"].(float64)
			if iat != nbf || time.Duration(expClaim-iat)*time.Second != ttl {
				t.Errorf("iat %v nbf %v exp %v, want iat = nbf and exp - iat = %s", iat, nbf, expClaim, ttl)
			}
			_, hasTID := payload["tid"]
			if hasTID != (tt.want.TenantID != "") {
				t.Errorf("tid present = %v, want %v", hasTID, tt.want.TenantID != "")
			}
		})
	}
}

func TestIssueRefusesBadGrants(t *testing.T) {
	t.Parallel()
	clk := newClock()
	keys := replica(t, newDB(t), newKEK(t), clk)
	iss := newIssuer(t, keys, clk)

	tenant, user := uuid.NewString(), uuid.NewString()
	aud := []string{identityAudience}
	tests := []struct {
		name  string
		grant token.Grant
	}{
		{"unknown kind", token.Grant{Kind: "robot", Subject: "r2", Audience: aud}},
		{"user id not a UUID", token.Grant{Kind: claims.KindUser, Subject: "bob", TenantID: tenant, Audience: aud}},
		{"nil user id", token.Grant{Kind: claims.KindUser, Subject: uuid.Nil.String(), TenantID: tenant, Audience: aud}},
		{"user without tenant", token.Grant{Kind: claims.KindUser, Subject: user, Audience: aud}},
		{"service account without tenant", token.Grant{Kind: claims.KindServiceAccount, Subject: user, Audience: aud}},
		{"tenant not a UUID", token.Grant{Kind: claims.KindUser, Subject: user, TenantID: "acme", Audience: aud}},
		{"service name with colon", token.Grant{Kind: claims.KindService, Subject: "svc:x", Audience: aud}},
		{"empty operator name", token.Grant{Kind: claims.KindOperator, Subject: "", Audience: aud}},
		{"no audience", token.Grant{Kind: claims.KindService, Subject: "sync"}},
		{"empty audience", token.Grant{Kind: claims.KindService, Subject: "sync", Audience: []string{""}}},
		{"empty role", token.Grant{Kind: claims.KindUser, Subject: user, TenantID: tenant, Roles: []string{""}, Audience: aud}},
		{"scope with a space", token.Grant{Kind: claims.KindService, Subject: "sync", Scopes: []string{"a b"}, Audience: aud}},
		{"actor not a service", token.Grant{Kind: claims.KindUser, Subject: user, TenantID: tenant, Actor: "user:" + user, Audience: aud}},
		{"actor malformed", token.Grant{Kind: claims.KindUser, Subject: user, TenantID: tenant, Actor: "connection", Audience: aud}},
		{"TTL too short", token.Grant{Kind: claims.KindService, Subject: "sync", Audience: aud, TTL: token.MinTTL - time.Second}},
		{"TTL too long", token.Grant{Kind: claims.KindService, Subject: "sync", Audience: aud, TTL: token.MaxTTL + time.Second}},
		{"negative TTL", token.Grant{Kind: claims.KindService, Subject: "sync", Audience: aud, TTL: -time.Minute}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, _, err := iss.Issue(context.Background(), tt.grant)
			if !errors.Is(err, token.ErrInvalidGrant) {
				t.Fatalf("Issue = %q, %v; want ErrInvalidGrant", tok, err)
			}
		})
	}
}

func TestNewIssuerRefusesTTLOutsideBounds(t *testing.T) {
	t.Parallel()
	clk := newClock()
	keys := replica(t, newDB(t), newKEK(t), clk)
	for _, ttl := range []time.Duration{time.Minute, token.MinTTL - time.Second, token.MaxTTL + time.Second, time.Hour, -token.DefaultTTL} {
		if _, err := token.NewIssuer(keys, token.IssuerConfig{DefaultTTL: ttl}); err == nil {
			t.Errorf("NewIssuer(DefaultTTL %s) succeeded", ttl)
		}
	}
	for _, ttl := range []time.Duration{0, token.MinTTL, token.DefaultTTL, token.MaxTTL} {
		if _, err := token.NewIssuer(keys, token.IssuerConfig{DefaultTTL: ttl}); err != nil {
			t.Errorf("NewIssuer(DefaultTTL %s): %v", ttl, err)
		}
	}
	if _, err := token.NewIssuer(nil, token.IssuerConfig{}); err == nil {
		t.Error("NewIssuer(nil key ring) succeeded")
	}
}
