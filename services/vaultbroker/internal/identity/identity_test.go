package identity_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/pkg/authn"
	"github.com/bulkhead/bulkhead/pkg/claims"
	"github.com/bulkhead/bulkhead/pkg/testenv"
	"github.com/bulkhead/bulkhead/services/identity/identitytest"
	"github.com/bulkhead/bulkhead/services/vaultbroker/brokertest"
	"github.com/bulkhead/bulkhead/services/vaultbroker/internal/identity"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newClient(t *testing.T, id *identitytest.Identity, secret string, now func() time.Time) *identity.Client {
	t.Helper()
	conn, err := grpc.NewClient(id.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	c, err := identity.New(identity.Config{Conn: conn, ClientID: brokertest.ClientID, ClientSecret: secret, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func code(err error) codes.Code {
	st, _ := apierr.ToStatus(err)
	return st.Code()
}

// TestServiceTokenIsCachedAndRenewed: one IssueToken serves every call until two thirds of the
// token's life have passed; then the next call renews it.
func TestServiceTokenIsCachedAndRenewed(t *testing.T) {
	id := identitytest.Start(t, identitytest.Options{Services: brokertest.Services})
	clk := &clock{t: time.Now()}
	c := newClient(t, id, id.PlatformSecret(brokertest.ClientID), clk.now)
	ctx := context.Background()
	first, err := c.ServiceToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if tok, err := c.ServiceToken(ctx); err != nil || tok != first {
			t.Fatalf("cached token changed: %v", err)
		}
	}
	if got := c.Stats().ServiceTokensIssued; got != 1 {
		t.Fatalf("issued %d service tokens, want 1", got)
	}
	clk.add(7 * time.Minute) // identity's default TTL is 10 minutes
	if _, err := c.ServiceToken(ctx); err != nil {
		t.Fatal(err)
	}
	if got := c.Stats().ServiceTokensIssued; got != 2 {
		t.Fatalf("issued %d service tokens after 2/3 of the TTL, want 2", got)
	}
	claimsOf(t, first, func(m map[string]any) {
		if m["sub"] != "svc:"+brokertest.ClientID || !sameAud(m["aud"], "bulkhead.identity") {
			t.Fatalf("service token claims %v: want sub svc:%s and only aud bulkhead.identity", m, brokertest.ClientID)
		}
	})
}

func TestVaultJWT(t *testing.T) {
	id := identitytest.Start(t, identitytest.Options{Services: brokertest.Services})
	c := newClient(t, id, id.PlatformSecret(brokertest.ClientID), nil)
	tenant := id.CreateTenant(t, "acme")
	userTok := id.Token(t, tenant.OwnerKey)
	user := &claims.Claims{TenantID: tenant.ID, Kind: claims.KindUser, Subject: tenant.OwnerID, Token: userTok}
	other := *user
	other.TenantID = testenv.NewTenantID()
	noToken := *user
	noToken.Token = ""
	cases := []struct {
		name   string
		claims *claims.Claims
		tenant string
		want   codes.Code
	}{
		{"the caller's own tenant", user, tenant.ID, codes.OK},
		{"no caller in the context", nil, tenant.ID, codes.Internal},
		{"caller of another tenant", &other, tenant.ID, codes.Internal},
		{"caller without its token", &noToken, tenant.ID, codes.Internal},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if tc.claims != nil {
				ctx = claims.NewContext(ctx, tc.claims)
			}
			jwt, err := c.VaultJWT(ctx, tc.tenant)
			if got := code(err); got != tc.want {
				t.Fatalf("code %v, want %v (%v)", got, tc.want, err)
			}
			if tc.want != codes.OK {
				return
			}
			claimsOf(t, jwt, func(m map[string]any) {
				act, _ := m["act"].(map[string]any)
				if m["tid"] != tenant.ID || !sameAud(m["aud"], "bulkhead.vault") || m["sub"] != "user:"+tenant.OwnerID || act["sub"] != "svc:"+brokertest.ClientID {
					t.Fatalf("vault jwt claims %v", m)
				}
			})
		})
	}
	if got := c.Stats().VaultJWTsExchanged; got != 1 {
		t.Fatalf("exchanged %d, want 1", got)
	}

	// A suspended tenant's caller cannot get a Vault identity.
	octx := identitytest.WithToken(context.Background(), id.OperatorToken(t))
	if _, err := identityv1.NewTenantServiceClient(id.Conn(t)).SuspendTenant(octx, &identityv1.SuspendTenantRequest{TenantId: tenant.ID}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond) // identity's own status cache is 200ms
	defer tick.Stop()
	for {
		_, err := c.VaultJWT(claims.NewContext(context.Background(), user), tenant.ID)
		if apierr.Is(err, apierr.ReasonTenantSuspended) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("exchange for a suspended tenant: %v, want TENANT_SUSPENDED", err)
		}
		<-tick.C
	}
}

func TestTenantState(t *testing.T) {
	id := identitytest.Start(t, identitytest.Options{Services: brokertest.Services})
	c := newClient(t, id, id.PlatformSecret(brokertest.ClientID), nil)
	tenant := id.CreateTenant(t, "acme")
	ctx := context.Background()
	if st, err := c.TenantState(ctx, tenant.ID); err != nil || st != authn.StateActive {
		t.Fatalf("active tenant: %v, %v", st, err)
	}
	if st, err := c.TenantState(ctx, testenv.NewTenantID()); err != nil || st != authn.StateInactive {
		t.Fatalf("unknown tenant: %v, %v; want StateInactive, nil", st, err)
	}
}

func TestCallErrors(t *testing.T) {
	id := identitytest.Start(t, identitytest.Options{Services: brokertest.Services})
	wrong := newClient(t, id, "not-the-secret", nil)
	if _, err := wrong.ServiceToken(context.Background()); code(err) != codes.Internal {
		t.Fatalf("bad client secret: %v, want Internal (the broker's misconfiguration, not the caller's)", err)
	}
	conn, err := grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	down, err := identity.New(identity.Config{Conn: conn, ClientID: "vaultbroker", ClientSecret: "x", CallTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	_, err = down.TenantState(context.Background(), testenv.NewTenantID())
	if code(err) != codes.Unavailable {
		t.Fatalf("identity down: %v, want Unavailable", err)
	}
}

// claimsOf decodes a JWT's payload (the signature is identity's business; here only its
// content is inspected).
func claimsOf(t *testing.T, jwt string, check func(map[string]any)) {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", jwt)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	check(m)
}

func sameAud(v any, want string) bool {
	switch a := v.(type) {
	case string:
		return a == want
	case []any:
		return len(a) == 1 && a[0] == want
	}
	return false
}
