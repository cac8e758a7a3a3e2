package token_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/bulkhead/bulkhead/pkg/authn"

	"github.com/bulkhead/bulkhead/services/identity/internal/token"
)

func serveJWKS(t *testing.T, keys *token.Keyring) string {
	t.Helper()
	h, err := token.NewJWKSHandler(keys, token.JWKSHandlerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(token.JWKSPath, h)
	srv := httptest.NewServer(mux) // real HTTP on 127.0.0.1
	t.Cleanup(srv.Close)
	return srv.URL + token.JWKSPath
}

func get(t *testing.T, method, url string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func TestJWKSOverHTTP(t *testing.T) {
	t.Parallel()
	clk := newClock()
	keys := replica(t, newDB(t), newKEK(t), clk)
	url := serveJWKS(t, keys)
	ctx := context.Background()

	resp, body := get(t, http.MethodGet, url, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "public, max-age=300" {
		t.Errorf("Cache-Control = %q", cc)
	}
	// What GetJwks returns is byte for byte what HTTP serves.
	doc, err := keys.JWKS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if string(doc) != string(body) {
		t.Errorf("HTTP body differs from Keyring.JWKS:\n%s\n%s", body, doc)
	}

	set, err := jwk.Parse(body)
	if err != nil {
		t.Fatalf("body is not a JWK Set: %v\n%s", err, body)
	}
	if set.Len() != 1 {
		t.Fatalf("%d keys published, want 1", set.Len())
	}
	k, _ := set.Key(0)
	kid, _ := k.KeyID()
	alg, _ := k.Algorithm()
	use, _ := k.KeyUsage()
	if kid != keys.CurrentKID() || alg.String() != "EdDSA" || use != "sig" {
		t.Errorf("key kid=%s alg=%s use=%s, want kid=%s alg=EdDSA use=sig", kid, alg, use, keys.CurrentKID())
	}
	if isPriv, err := jwk.IsPrivateKey(k); err != nil || isPriv {
		t.Fatalf("published key is private (%v, %v)", isPriv, err)
	}
	// No private member may appear in the document, whatever the library's view of it.
	var raw struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatal(err)
	}
	for _, m := range raw.Keys {
		if _, ok := m["d"]; ok {
			t.Fatalf("JWKS carries a private key member: %s", body)
		}
		if m["kty"] != "OKP" || m["crv"] != "Ed25519" {
			t.Errorf("key = %v, want kty OKP crv Ed25519", m)
		}
	}

	etag := resp.Header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	if resp, body := get(t, http.MethodGet, url, map[string]string{"If-None-Match": etag}); resp.StatusCode != http.StatusNotModified || len(body) != 0 {
		t.Errorf("conditional GET: %s with %d bytes, want 304 and no body", resp.Status, len(body))
	}
	if resp, body := get(t, http.MethodHead, url, nil); resp.StatusCode != http.StatusOK || len(body) != 0 {
		t.Errorf("HEAD: %s with %d bytes", resp.Status, len(body))
	}
	if resp, _ := get(t, http.MethodPost, url, nil); resp.StatusCode != http.StatusMethodNotAllowed || !strings.Contains(resp.Header.Get("Allow"), "GET") {
		t.Errorf("POST: %s, Allow %q", resp.Status, resp.Header.Get("Allow"))
	}

	// After a rotation the document changes, and so does its ETag.
	if _, err := keys.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	resp2, body2 := get(t, http.MethodGet, url, map[string]string{"If-None-Match": etag})
	if resp2.StatusCode != http.StatusOK || resp2.Header.Get("ETag") == etag {
		t.Fatalf("after rotation: %s, ETag %s (was %s)", resp2.Status, resp2.Header.Get("ETag"), etag)
	}
	if set, err := jwk.Parse(body2); err != nil || set.Len() != 2 {
		t.Fatalf("after rotation: %v, %s", err, body2)
	}
}

// TestRemoteVerifierUsesServedJWKS is the path every other service takes: pkg/authn's remote
// key source fetches identity's JWKS over HTTP and verifies identity's tokens, including one
// signed by a key created after its first fetch.
func TestRemoteVerifierUsesServedJWKS(t *testing.T) {
	t.Parallel()
	clk := newClock()
	keys := replica(t, newDB(t), newKEK(t), clk)
	iss := newIssuer(t, keys, clk)
	url := serveJWKS(t, keys)
	ctx := context.Background()

	remote, err := authn.NewRemoteKeys(ctx, authn.RemoteKeysConfig{URL: url, MinRefreshInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = remote.Close(context.Background()) })
	v, err := authn.NewVerifier(authn.VerifierConfig{
		Issuer: token.DefaultIssuer, Audience: "bulkhead.connection", Keys: remote, Tenants: allActive,
		Now: clk.Now, CacheSize: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	g := serviceGrant()
	g.Audience = []string{"bulkhead.connection"}
	if _, err := v.Verify(ctx, issue(t, iss, g)); err != nil {
		t.Fatalf("Verify through the served JWKS: %v", err)
	}
	if _, err := keys.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(ctx, issue(t, iss, g)); err != nil {
		t.Fatalf("Verify a token of the rotated key through the served JWKS: %v", err)
	}
}

func TestJWKSHandlerMaxAgeBelowOverlap(t *testing.T) {
	t.Parallel()
	clk := newClock()
	keys := replica(t, newDB(t), newKEK(t), clk)
	for _, maxAge := range []time.Duration{keys.Overlap(), keys.Overlap() + time.Hour, time.Millisecond, -time.Second} {
		if _, err := token.NewJWKSHandler(keys, token.JWKSHandlerConfig{MaxAge: maxAge}); err == nil {
			t.Errorf("NewJWKSHandler(MaxAge %s) accepted; overlap is %s", maxAge, keys.Overlap())
		}
	}
	if _, err := token.NewJWKSHandler(keys, token.JWKSHandlerConfig{MaxAge: keys.Overlap() - time.Second}); err != nil {
		t.Errorf("NewJWKSHandler(MaxAge just under the overlap): %v", err)
	}
}
