package token_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/pkg/authn"
	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/pkg/testenv"

	"github.com/bulkhead/bulkhead/services/identity/internal/token"
	"github.com/bulkhead/bulkhead/services/identity/migrations"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// identityAudience is what identity's own verifier accepts.
const identityAudience = "bulkhead.identity"

// clock is a settable time source shared by key rings, issuers and verifiers, so tests move
// through token lifetimes and key publication windows without sleeping.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock {
	return &clock{t: time.Now().Truncate(time.Second)}
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newDB returns a fresh migrated identity database (real PostgreSQL).
func newDB(t testing.TB) *testenv.Database {
	t.Helper()
	return testenv.NewDatabase(t, testenv.DBSpec{Name: "identity", Migrations: migrations.FS})
}

// replica is one identity replica's view of the keys: its own connection pool as the app role,
// its own key ring.
func replica(t testing.TB, db *testenv.Database, kek token.KEK, clk *clock) *token.Keyring {
	t.Helper()
	return replicaOn(t, db.AppDB(t), kek, clk)
}

func replicaOn(t testing.TB, tdb *pgtenant.DB, kek token.KEK, clk *clock) *token.Keyring {
	t.Helper()
	keys, err := token.NewKeyring(context.Background(), token.KeyringConfig{
		Store: token.NewPostgresStore(tdb),
		KEK:   kek,
		Now:   clk.Now,
	})
	if err != nil {
		t.Fatalf("NewKeyring: %v", err)
	}
	return keys
}

func newKEK(t testing.TB) token.KEK {
	t.Helper()
	raw := make([]byte, token.KEKSize)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	kek, err := token.ParseKEK(base64.StdEncoding.EncodeToString(raw))
	if err != nil {
		t.Fatal(err)
	}
	return kek
}

func newIssuer(t testing.TB, keys *token.Keyring, clk *clock) *token.Issuer {
	t.Helper()
	iss, err := token.NewIssuer(keys, token.IssuerConfig{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

// allActive is the tenant kill switch with every tenant active: the tenant-status check has its
// own tests in pkg/authn and identity's store; here only the token itself is under test.
var allActive = authn.TenantStatusFunc(func(context.Context, string) (bool, error) { return true, nil })

// identityVerifier is pkg/authn's verifier configured as identity configures it for itself:
// identity's issuer, its own audience, keys straight from the key ring. The verified-token
// cache is off so each Verify checks the signature and times again.
func identityVerifier(t testing.TB, keys authn.KeySource, clk *clock) *authn.Verifier {
	t.Helper()
	v, err := authn.NewVerifier(authn.VerifierConfig{
		Issuer:    token.DefaultIssuer,
		Audience:  identityAudience,
		Keys:      keys,
		Tenants:   allActive,
		Now:       clk.Now,
		CacheSize: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func issue(t testing.TB, iss *token.Issuer, g token.Grant) string {
	t.Helper()
	tok, _, err := iss.Issue(context.Background(), g)
	if err != nil {
		t.Fatalf("Issue(%+v): %v", g, err)
	}
	return tok
}
