package authn_test

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bulkhead/bulkhead/pkg/authn"
	"github.com/bulkhead/bulkhead/pkg/authn/authntest"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/fuzz/FuzzVerify from the fixed fuzz key")

// The fuzz key and clock are fixed so that the committed "valid" seed stays valid forever.
var (
	fuzzSeed = []byte("bulkhead-authn-fuzz-key-32bytes!") // 32 bytes
	fuzzNow  = time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
)

func fuzzIssuer(tb testing.TB) (*authntest.Issuer, ed25519.PublicKey) {
	tb.Helper()
	priv := ed25519.NewKeyFromSeed(fuzzSeed)
	iss, err := authntest.NewIssuerFromKey(authntest.DefaultIssuer, "fuzz-1", priv)
	if err != nil {
		tb.Fatal(err)
	}
	return iss, priv.Public().(ed25519.PublicKey)
}

func fuzzVerifier(tb testing.TB, iss *authntest.Issuer) *authn.Verifier {
	tb.Helper()
	set := iss.PublicSet()
	v, err := authn.NewVerifier(authn.VerifierConfig{
		Issuer: authntest.DefaultIssuer, Audience: audience,
		Keys:      authn.KeyFunc(func(context.Context) (jwk.Set, error) { return set, nil }),
		Tenants:   newTenants(tenantA),
		CacheSize: -1, // every input goes through the parser
		Now:       func() time.Time { return fuzzNow.Add(time.Minute) },
	})
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

// corpusSeeds builds the committed seeds. Names are file names in testdata/fuzz/FuzzVerify.
func corpusSeeds(tb testing.TB, iss *authntest.Issuer) map[string]string {
	valid := iss.MustMint(tb, authntest.Token{
		Subject: "user:9d3c1c7e-2b1a-4f7e-9c1d-0a1b2c3d4e5f", TenantID: tenantA, Audience: []string{audience},
		Roles: []string{"member"}, Scope: "records.read", Actor: "svc:connection", IssuedAt: fuzzNow, ID: "fuzz-jti-1",
	})
	parts := strings.Split(valid, ".")
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","kid":"fuzz-1","typ":"JWT"}`))
	return map[string]string{
		"valid":     valid,
		"truncated": valid[:len(valid)-12],
		"alg_none":  none + "." + parts[1] + ".",
		"garbage":   "eyJ.garbage.!!",
	}
}

// TestFuzzCorpus keeps the committed seeds meaningful: the valid one must verify (else the fuzzer
// never explores past the signature check) and the others must not.
func TestFuzzCorpus(t *testing.T) {
	iss, _ := fuzzIssuer(t)
	dir := filepath.Join("testdata", "fuzz", "FuzzVerify")
	seeds := corpusSeeds(t, iss)
	if *updateCorpus {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, tok := range seeds {
			body := "go test fuzz v1\nstring(" + strconv.Quote(tok) + ")\n"
			if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	v := fuzzVerifier(t, iss)
	// Seeds the fuzzer found stay in the corpus as regressions; they must all be refused.
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if _, ok := seeds[e.Name()]; !ok {
			seeds[e.Name()] = ""
		}
	}
	for name := range seeds {
		raw, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("seed %s missing (run go test -run TestFuzzCorpus -update-corpus): %v", name, err)
		}
		lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
		tok, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "string("), ")"))
		if err != nil {
			t.Fatalf("seed %s: %v", name, err)
		}
		_, err = v.Verify(context.Background(), tok)
		if (name == "valid") != (err == nil) {
			t.Errorf("seed %s: Verify error = %v", name, err)
		}
	}
}

// FuzzVerify feeds arbitrary strings to the verifier. It must never panic, must refuse with
// Unauthenticated (or the kill switch's PermissionDenied), and must never accept a token whose
// signature the test key did not make — checked independently with crypto/ed25519.
func FuzzVerify(f *testing.F) {
	iss, pub := fuzzIssuer(f)
	for _, s := range corpusSeeds(f, iss) {
		f.Add(s)
	}
	v := fuzzVerifier(f, iss)
	f.Fuzz(func(t *testing.T, token string) {
		c, err := v.Verify(context.Background(), token)
		if err != nil {
			if code := status.Code(err); code != codes.Unauthenticated && code != codes.PermissionDenied {
				t.Fatalf("refusal with code %v: %v", code, err)
			}
			return
		}
		parts := strings.Split(token, ".")
		if len(parts) != 3 {
			t.Fatalf("accepted a token with %d parts", len(parts))
		}
		sig, derr := base64.RawURLEncoding.DecodeString(parts[2])
		if derr != nil || !ed25519.Verify(pub, []byte(parts[0]+"."+parts[1]), sig) {
			t.Fatalf("accepted a token not signed by the test key: %q", token)
		}
		hdr, derr := base64.RawURLEncoding.DecodeString(parts[0])
		if derr != nil || !strings.Contains(string(hdr), `"`+jwa.EdDSA().String()+`"`) {
			t.Fatalf("accepted a header without EdDSA: %q", hdr)
		}
		if c.Token != token || c.TenantID != tenantA {
			t.Fatalf("claims do not match the token: %+v", c)
		}
	})
}
