package vault_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/pkg/testenv"
	"github.com/bulkhead/bulkhead/pkg/vaultlocal"
	"github.com/bulkhead/bulkhead/services/vaultbroker/internal/vault"
	"github.com/google/uuid"
	vaultapi "github.com/hashicorp/vault-client-go"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwt"
)

// TestMain stops the shared Vault after the tests, then fails the run on leaked goroutines
// (a broker, provisioner or client a test forgot to close).
func TestMain(m *testing.M) { testenv.Main(m) }

// closeIdle closes a test client's pooled connections so their goroutines end.
func closeIdle(c *vaultapi.Client) { c.Configuration().HTTPClient.CloseIdleConnections() }

const testIssuer = "bulkhead-identity-test"

// signer mints tenant JWTs the way identity will: EdDSA, aud bulkhead.vault, tid.
type signer struct {
	priv   ed25519.PrivateKey
	pubPEM string
}

func newSigner() (*signer, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return &signer{priv: priv, pubPEM: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))}, nil
}

type claimsOpt func(*jwt.Builder)

func (s *signer) mint(tenant string, opts ...claimsOpt) (string, error) {
	now := time.Now()
	b := jwt.NewBuilder().
		Issuer(testIssuer).
		Subject("svc:vaultbroker").
		Audience([]string{vault.DefaultAudience}).
		Claim("tid", tenant).
		IssuedAt(now).
		NotBefore(now.Add(-time.Second)).
		Expiration(now.Add(10 * time.Minute)).
		JwtID(uuid.NewString())
	for _, o := range opts {
		o(b)
	}
	tok, err := b.Build()
	if err != nil {
		return "", err
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.EdDSA(), s.priv))
	return string(signed), err
}

// source is the JWT source tests give the broker: a JWT for exactly the tenant asked for.
func (s *signer) source() vault.JWTSource {
	return vault.JWTSourceFunc(func(_ context.Context, tenant string) (string, error) { return s.mint(tenant) })
}

// env is the shared mount-mode setup of this test binary on the shared Vault server:
// bootstrapped with the root token, a provisioner token carrying only the policy shipped in
// deploy/vault/provisioner.hcl, and a signer Vault's JWT auth trusts.
type env struct {
	srv       *vaultlocal.Server
	caps      vaultlocal.Capabilities
	signer    *signer
	cfg       vault.Config
	verified  *vault.Verified
	prov      *vault.Provisioner
	provToken string
	root      *vaultapi.Client
	repoRoot  string
}

var (
	sharedEnvOnce sync.Once
	sharedEnv     *env
	sharedEnvErr  error
)

func testEnv(t testing.TB) *env {
	t.Helper()
	srv := testenv.Vault(t)
	caps := testenv.VaultCapabilities(t)
	sharedEnvOnce.Do(func() { sharedEnv, sharedEnvErr = setupEnv(srv, caps) })
	if sharedEnvErr != nil {
		t.Fatalf("vault test env: %v", sharedEnvErr)
	}
	return sharedEnv
}

func setupEnv(srv *vaultlocal.Server, caps vaultlocal.Capabilities) (*env, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	root, err := vaultlocal.RepoRoot()
	if err != nil {
		return nil, err
	}
	e := &env{srv: srv, caps: caps, repoRoot: root}
	if e.signer, err = newSigner(); err != nil {
		return nil, err
	}
	e.cfg = vault.Config{
		Addr: srv.Addr(),
		Mode: vault.ModeMount,
		Trust: vault.JWTTrust{
			ValidationPubKeys: []string{e.signer.pubPEM},
			BoundIssuer:       testIssuer,
		},
	}
	if _, err := vault.Bootstrap(ctx, e.cfg, srv.RootToken()); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	if e.root, err = rootClient(srv); err != nil {
		return nil, err
	}
	// The provisioner's token carries only the policy file we ship, not Bootstrap's copy: the
	// file itself is what is under test.
	hcl, err := os.ReadFile(filepath.Join(root, "deploy", "vault", "provisioner.hcl"))
	if err != nil {
		return nil, err
	}
	if e.provToken, err = tokenWithPolicy(ctx, e.root, "bulkhead-provisioner-file", string(hcl)); err != nil {
		return nil, err
	}
	if e.verified, err = vault.Verify(ctx, e.cfg, e.provToken); err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	if e.prov, err = vault.NewProvisioner(e.cfg, e.verified, e.provToken); err != nil {
		return nil, err
	}
	return e, nil
}

func rootClient(srv *vaultlocal.Server) (*vaultapi.Client, error) {
	c, err := vaultapi.New(vaultapi.WithAddress(srv.Addr()), vaultapi.WithRequestTimeout(30*time.Second))
	if err != nil {
		return nil, err
	}
	return c, c.SetToken(srv.RootToken())
}

// tokenWithPolicy writes policy hcl as name and returns a token carrying only that policy.
func tokenWithPolicy(ctx context.Context, root *vaultapi.Client, name, hcl string) (string, error) {
	if _, err := root.Write(ctx, "sys/policies/acl/"+name, map[string]any{"policy": hcl}); err != nil {
		return "", fmt.Errorf("write policy %s: %w", name, err)
	}
	resp, err := root.Write(ctx, "auth/token/create", map[string]any{
		"policies":          []string{name},
		"no_default_policy": true,
		"ttl":               "1h",
	})
	if err != nil {
		return "", fmt.Errorf("create token: %w", err)
	}
	return resp.Auth.ClientToken, nil
}

// tenant provisions a fresh tenant and deprovisions it when the test ends.
func (e *env) tenant(t testing.TB) string {
	t.Helper()
	id := uuid.NewString()
	ctx := context.Background()
	if _, err := e.prov.Provision(ctx, id); err != nil {
		t.Fatalf("provision %s: %v", id, err)
	}
	t.Cleanup(func() {
		if _, err := e.prov.Deprovision(context.Background(), id); err != nil {
			t.Errorf("deprovision %s: %v", id, err)
		}
	})
	return id
}

// broker returns a broker on the shared server with cfg adjusted by mod.
func (e *env) broker(t testing.TB, mod func(*vault.Config)) *vault.Broker {
	t.Helper()
	cfg := e.cfg
	if mod != nil {
		mod(&cfg)
	}
	b, err := vault.NewBroker(cfg, e.verified, e.signer.source())
	if err != nil {
		t.Fatalf("new broker: %v", err)
	}
	t.Cleanup(b.Close)
	return b
}

// rawClient is a client carrying token and nothing else, for using a token directly.
func (e *env) rawClient(t testing.TB, token string) *vaultapi.Client {
	t.Helper()
	retry := vaultapi.DefaultConfiguration().RetryConfiguration
	retry.RetryMax = 0
	c, err := vaultapi.New(vaultapi.WithAddress(e.srv.Addr()), vaultapi.WithRetryConfiguration(retry))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetToken(token); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeIdle(c) })
	return c
}

func statusOf(err error) int {
	var re *vaultapi.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}
