package identity_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/pkg/authn"
	"github.com/bulkhead/bulkhead/pkg/testenv"
	"github.com/bulkhead/bulkhead/services/connection/internal/identity"
	"github.com/bulkhead/bulkhead/services/identity/identitytest"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// The connection service's parts of the shared identity client, against a real identity: its
// token's audiences, tokens for a tenant's users, NotFound for a user who is not there.
func TestConnectionIdentityClient(t *testing.T) {
	id := identitytest.Start(t, identitytest.Options{})
	conn, err := grpc.NewClient(id.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	c, err := identity.New(identity.Config{Conn: conn, ClientID: "connection", ClientSecret: id.PlatformSecret("connection")})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tenant := id.CreateTenant(t, "acme")

	svc, err := c.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m := claimsOf(t, svc)
	if m["sub"] != "svc:connection" || !audIs(m["aud"], identity.AudienceIdentity, identity.AudienceVaultBroker) {
		t.Fatalf("service token claims %v: want sub svc:connection, aud identity and vault-broker", m)
	}

	user, err := c.UserToken(ctx, tenant.ID, tenant.OwnerID)
	if err != nil {
		t.Fatal(err)
	}
	m = claimsOf(t, user)
	act, _ := m["act"].(map[string]any)
	if m["tid"] != tenant.ID || m["sub"] != "user:"+tenant.OwnerID || !audIs(m["aud"], identity.AudienceVaultBroker) || act["sub"] != "svc:connection" {
		t.Fatalf("user token claims %v", m)
	}

	cases := []struct {
		name         string
		tenant, user string
		want         codes.Code
	}{
		{"removed or unknown user", tenant.ID, testenv.NewTenantID(), codes.NotFound},
		{"unknown tenant", testenv.NewTenantID(), tenant.OwnerID, codes.NotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.UserToken(ctx, tc.tenant, tc.user)
			st, _ := apierr.ToStatus(err)
			if st.Code() != tc.want {
				t.Fatalf("code %v, want %v (%v)", st.Code(), tc.want, err)
			}
		})
	}

	if st, err := c.TenantState(ctx, tenant.ID); err != nil || st != authn.StateActive {
		t.Fatalf("active tenant: %v, %v", st, err)
	}
	if st, err := c.TenantState(ctx, testenv.NewTenantID()); err != nil || st != authn.StateInactive {
		t.Fatalf("unknown tenant: %v, %v; want StateInactive, nil", st, err)
	}
}

// claimsOf decodes a JWT's payload; the signature is identity's business.
func claimsOf(t *testing.T, jwt string) map[string]any {
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
	return m
}

// audIs reports whether a JWT's aud claim is exactly want, in any order.
func audIs(v any, want ...string) bool {
	var got []string
	switch a := v.(type) {
	case string:
		got = []string{a}
	case []any:
		for _, x := range a {
			s, _ := x.(string)
			got = append(got, s)
		}
	}
	slices.Sort(got)
	want = slices.Clone(want)
	slices.Sort(want)
	return slices.Equal(got, want)
}
