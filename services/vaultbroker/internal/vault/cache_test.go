package vault_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/pkg/vaultlocal"
	"github.com/bulkhead/bulkhead/services/vaultbroker/internal/vault"
	"github.com/google/uuid"
)

// fakeClock drives the broker's refresh decisions; Vault itself still runs on real time.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// seed writes one credential per tenant and returns its id.
func seed(t testing.TB, b *vault.Broker, tenants ...string) string {
	t.Helper()
	cred := uuid.NewString()
	for _, tenant := range tenants {
		if _, err := b.PutCredential(context.Background(), tenant, cred, map[string]string{"k": tenant}, 0); err != nil {
			t.Fatalf("seed %s: %v", tenant, err)
		}
	}
	return cred
}

func get(t *testing.T, b *vault.Broker, tenant, cred string) {
	t.Helper()
	got, err := b.GetCredential(context.Background(), tenant, cred, 0)
	if err != nil || got.Data["k"] != tenant {
		t.Fatalf("get %s: %+v, %v", tenant, got, err)
	}
}

func wantStats(t *testing.T, b *vault.Broker, want vault.Stats) {
	t.Helper()
	if got := b.Stats(); got != want {
		t.Fatalf("stats %+v, want %+v", got, want)
	}
}

func TestTokenCacheEviction(t *testing.T) {
	e := testEnv(t)
	t1, t2, t3 := e.tenant(t), e.tenant(t), e.tenant(t)
	b := e.broker(t, func(c *vault.Config) { c.CacheSize = 2 })
	cred := seed(t, b, t1, t2, t3) // logs in t1, t2, then t3 evicts t1
	wantStats(t, b, vault.Stats{Logins: 3, Evictions: 1, Cached: 2})
	get(t, b, t2, cred) // cached: no login
	get(t, b, t3, cred)
	wantStats(t, b, vault.Stats{Logins: 3, Evictions: 1, Cached: 2})
	get(t, b, t1, cred) // evicted earlier: logs in again, evicting t2 (least recently used)
	wantStats(t, b, vault.Stats{Logins: 4, Evictions: 2, Cached: 2})
	b.Forget(t3)
	get(t, b, t3, cred)
	wantStats(t, b, vault.Stats{Logins: 5, Evictions: 2, Cached: 2})
}

// TestColdTenantSingleLogin: many concurrent first requests for one tenant share one login.
func TestColdTenantSingleLogin(t *testing.T) {
	e := testEnv(t)
	tenant := e.tenant(t)
	cred := seed(t, e.broker(t, nil), tenant)
	b := e.broker(t, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := b.GetCredential(context.Background(), tenant, cred, 0)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	wantStats(t, b, vault.Stats{Logins: 1, Cached: 1})
}

// TestTokenRefresh moves the broker's clock past the refresh point (two thirds of the token
// TTL): batch tokens are replaced by a new login, service tokens are renewed with renew-self
// against the real server, and a token past its expiry is replaced by a login.
func TestTokenRefresh(t *testing.T) {
	e := testEnv(t)
	tests := []struct {
		tokenType vault.TokenType
		// after advancing past the refresh point
		afterRefresh vault.Stats
		// after advancing past expiry as well
		afterExpiry vault.Stats
	}{
		{vault.TokenBatch, vault.Stats{Logins: 2, Cached: 1}, vault.Stats{Logins: 3, Cached: 1}},
		{vault.TokenService, vault.Stats{Logins: 1, Renewals: 1, Cached: 1}, vault.Stats{Logins: 2, Renewals: 1, Cached: 1}},
	}
	for _, tc := range tests {
		t.Run(string(tc.tokenType), func(t *testing.T) {
			cfg := e.cfg
			cfg.TokenType = tc.tokenType
			cfg.TokenTTL = 10 * time.Minute
			prov, err := vault.NewProvisioner(cfg, e.verified, e.provToken)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(prov.Close)
			tenant := uuid.NewString()
			if _, err := prov.Provision(context.Background(), tenant); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _, _ = prov.Deprovision(context.Background(), tenant) })
			clock := newFakeClock()
			b := e.broker(t, func(c *vault.Config) { *c = cfg; c.Now = clock.Now })
			cred := seed(t, b, tenant)
			get(t, b, tenant, cred)
			wantStats(t, b, vault.Stats{Logins: 1, Cached: 1})

			clock.Advance(5 * time.Minute) // before the refresh point (6m40s)
			get(t, b, tenant, cred)
			wantStats(t, b, vault.Stats{Logins: 1, Cached: 1})

			clock.Advance(2 * time.Minute) // past it
			get(t, b, tenant, cred)
			wantStats(t, b, tc.afterRefresh)

			clock.Advance(time.Hour) // past any expiry: no renewal of a dead token, a login
			get(t, b, tenant, cred)
			wantStats(t, b, tc.afterExpiry)
		})
	}
}

// TestRejectedTokenDroppedAndReplaced: when Vault refuses the cached token (revoked by an
// operator, or garbage), the broker drops it, logs in once more and the request succeeds.
func TestRejectedTokenDroppedAndReplaced(t *testing.T) {
	e := testEnv(t)
	ctx := context.Background()

	t.Run("revoked service token", func(t *testing.T) {
		cfg := e.cfg
		cfg.TokenType = vault.TokenService
		prov, err := vault.NewProvisioner(cfg, e.verified, e.provToken)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(prov.Close)
		tenant := uuid.NewString()
		if _, err := prov.Provision(ctx, tenant); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _, _ = prov.Deprovision(context.Background(), tenant) })
		b := e.broker(t, func(c *vault.Config) { *c = cfg })
		cred := seed(t, b, tenant)
		token, err := vault.TenantTokenForTest(ctx, b, tenant)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.root.Write(ctx, "auth/token/revoke", map[string]any{"token": token}); err != nil {
			t.Fatal(err)
		}
		get(t, b, tenant, cred)
		wantStats(t, b, vault.Stats{Logins: 2, Invalidations: 1, Cached: 1})
	})

	t.Run("unknown batch token", func(t *testing.T) {
		tenant := e.tenant(t)
		b := e.broker(t, nil)
		cred := seed(t, b, tenant)
		if !vault.ReplaceTokenForTest(b, tenant, "hvb.not-a-token") {
			t.Fatal("no cached token to replace")
		}
		get(t, b, tenant, cred)
		wantStats(t, b, vault.Stats{Logins: 2, Invalidations: 1, Cached: 1})
	})
}

// TestVaultUnavailable stops a private Vault under a working broker: requests fail with
// ErrUnavailable (cached tenant and cold tenant alike), and so does start-up verification.
func TestVaultUnavailable(t *testing.T) {
	ctx := context.Background()
	srv, err := vaultlocal.Start(ctx, vaultlocal.Options{IgnoreEnv: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	signer, err := newSigner()
	if err != nil {
		t.Fatal(err)
	}
	cfg := vault.Config{
		Addr:       srv.Addr(),
		Mode:       vault.ModeMount,
		Trust:      vault.JWTTrust{ValidationPubKeys: []string{signer.pubPEM}, BoundIssuer: testIssuer},
		MaxRetries: -1,
	}
	if _, err := vault.Bootstrap(ctx, cfg, srv.RootToken()); err != nil {
		t.Fatal(err)
	}
	verified, err := vault.Verify(ctx, cfg, srv.RootToken())
	if err != nil {
		t.Fatal(err)
	}
	prov, err := vault.NewProvisioner(cfg, verified, srv.RootToken())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prov.Close)
	warm, cold := uuid.NewString(), uuid.NewString()
	for _, tenant := range []string{warm, cold} {
		if _, err := prov.Provision(ctx, tenant); err != nil {
			t.Fatal(err)
		}
	}
	b, err := vault.NewBroker(cfg, verified, signer.source())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	cred := seed(t, b, warm)

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		call func() error
	}{
		{"cached tenant read", func() error { _, err := b.GetCredential(ctx, warm, cred, 0); return err }},
		{"cached tenant write", func() error {
			_, err := b.PutCredential(ctx, warm, cred, map[string]string{"k": "v"}, 1)
			return err
		}},
		{"cold tenant login", func() error { _, err := b.GetCredential(ctx, cold, cred, 0); return err }},
		{"provision", func() error { _, err := prov.Provision(ctx, uuid.NewString()); return err }},
		{"verify", func() error { _, err := vault.Verify(ctx, cfg, srv.RootToken()); return err }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, vault.ErrUnavailable) {
				t.Fatalf("got %v, want ErrUnavailable", err)
			}
		})
	}
}
