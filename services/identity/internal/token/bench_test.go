package token_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bulkhead/bulkhead/pkg/authn"
	"github.com/bulkhead/bulkhead/pkg/claims"

	"github.com/bulkhead/bulkhead/services/identity/internal/token"
)

func benchGrant() token.Grant {
	return token.Grant{
		Kind: claims.KindUser, Subject: uuid.NewString(), TenantID: uuid.NewString(),
		Roles: []string{"admin"}, Audience: []string{identityAudience, "bulkhead.connection"},
	}
}

// BenchmarkIssue measures signing one token with a warm key ring (keys loaded from Postgres,
// no reload inside the loop): claims building, EdDSA signature, encoding.
func BenchmarkIssue(b *testing.B) {
	keys := benchKeyring(b)
	iss, err := token.NewIssuer(keys, token.IssuerConfig{})
	if err != nil {
		b.Fatal(err)
	}
	g := benchGrant()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := iss.Issue(ctx, g); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerify measures identity verifying its own tokens through pkg/authn with the key
// ring as key source: cold (signature and claims checked on every call) against cached (the
// verifier's verified-token cache).
func BenchmarkVerify(b *testing.B) {
	keys := benchKeyring(b)
	iss, err := token.NewIssuer(keys, token.IssuerConfig{})
	if err != nil {
		b.Fatal(err)
	}
	tok, _, err := iss.Issue(context.Background(), benchGrant())
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name      string
		cacheSize int
	}{{"cold", -1}, {"cached", 0}} {
		b.Run(bc.name, func(b *testing.B) {
			v, err := authn.NewVerifier(authn.VerifierConfig{
				Issuer: token.DefaultIssuer, Audience: identityAudience, Keys: keys,
				Tenants: allActive, CacheSize: bc.cacheSize,
			})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(ctx, tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// benchKeyring's refresh interval outlasts the benchmark, so no database round trip lands in
// the measured loop; reload costs are not what these benchmarks measure.
func benchKeyring(b *testing.B) *token.Keyring {
	b.Helper()
	db := newDB(b)
	keys, err := token.NewKeyring(context.Background(), token.KeyringConfig{
		Store: token.NewPostgresStore(db.AppDB(b)), KEK: newKEK(b), RefreshInterval: time.Hour,
	})
	if err != nil {
		b.Fatal(err)
	}
	return keys
}
