package launch_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/pkg/authn"
	"github.com/bulkhead/bulkhead/pkg/authz"
	"github.com/bulkhead/bulkhead/pkg/claims"
	"github.com/bulkhead/bulkhead/services/identity/identitytest"
	"github.com/bulkhead/bulkhead/services/identity/launch"
)

// verifierFor verifies tokens as the service named by audience would, with keys from identity's
// JWKS over HTTP. Tenant status is taken as active: the kill switch is TestKillSwitch's subject.
func verifierFor(t *testing.T, id *identitytest.Identity, audience string) *authn.Verifier {
	t.Helper()
	ctx := context.Background()
	keys, err := authn.NewRemoteKeys(ctx, authn.RemoteKeysConfig{URL: id.JWKSURL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = keys.Close(context.Background()) })
	v, err := authn.NewVerifier(authn.VerifierConfig{
		Issuer: id.Issuer, Audience: audience, Keys: keys,
		Tenants: authn.TenantStatusFunc(func(context.Context, string) (bool, error) { return true, nil }),
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestExchangeToken(t *testing.T) {
	id := identitytest.Start(t, identitytest.Options{Services: map[string][]authz.Permission{
		"connection":  {authz.TokensExchange, authz.TenantsStatus},
		"sync":        {authz.TokensExchange, authz.TenantsStatus, authz.ConnectionsRead, authz.SyncsManage},
		"vaultbroker": {authz.TenantsStatus},
	}})
	c := newClients(t, id)
	tn := id.CreateTenant(t, "acme")
	owner := as(t, id.Token(t, tn.OwnerKey))
	bob, err := c.members.AddMember(owner, &identityv1.AddMemberRequest{TenantId: tn.ID, Email: "bob@acme.example", Role: identityv1.Role_ROLE_VIEWER})
	if err != nil {
		t.Fatal(err)
	}
	bobID := bob.GetMember().GetUserId()
	userToken := id.Token(t, tn.OwnerKey) // default audience: not Vault
	vault := verifierFor(t, id, "bulkhead.vault")
	ctx := testCtx(t)

	if _, err := vault.Verify(ctx, userToken); code(err) != codes.Unauthenticated {
		t.Fatalf("an issued token is accepted by Vault's audience: %v", err)
	}

	conn := as(t, id.ServiceToken(t, "connection", launch.Audience))
	exchange := func(ctx context.Context, req *identityv1.ExchangeTokenRequest) (*claims.Claims, error) {
		resp, err := c.tokens.ExchangeToken(ctx, req)
		if err != nil {
			return nil, err
		}
		return vault.Verify(testCtx(t), resp.GetAccessToken())
	}

	broker := verifierFor(t, id, "bulkhead.vaultbroker")
	exchangeFor := func(ctx context.Context, req *identityv1.ExchangeTokenRequest, v *authn.Verifier) (*claims.Claims, error) {
		resp, err := c.tokens.ExchangeToken(ctx, req)
		if err != nil {
			return nil, err
		}
		return v.Verify(testCtx(t), resp.GetAccessToken())
	}
	syncCtx := as(t, id.ServiceToken(t, "sync", launch.Audience))
	issued := func(ctx context.Context, req *identityv1.ExchangeTokenRequest) string {
		resp, err := c.tokens.ExchangeToken(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetAccessToken()
	}
	// Tokens the connection service obtained for itself, and one another service obtained.
	connBackground := issued(conn, &identityv1.ExchangeTokenRequest{TenantId: tn.ID, Audience: []string{"bulkhead.vaultbroker"}})
	connForBob := issued(conn, &identityv1.ExchangeTokenRequest{TenantId: tn.ID, UserId: bobID, Audience: []string{"bulkhead.vaultbroker"}})
	syncBackground := issued(syncCtx, &identityv1.ExchangeTokenRequest{TenantId: tn.ID, Audience: []string{"bulkhead.vaultbroker"}})

	t.Run("another service's background token as subject", func(t *testing.T) {
		got, err := exchange(conn, &identityv1.ExchangeTokenRequest{SubjectToken: syncBackground, Audience: []string{"bulkhead.vault"}})
		if err != nil {
			t.Fatal(err)
		}
		if got.TenantID != tn.ID || got.Kind != claims.KindService || got.Subject != "sync" || got.Actor != "svc:connection" {
			t.Fatalf("claims %+v", got)
		}
	})
	t.Run("subject token", func(t *testing.T) {
		got, err := exchange(conn, &identityv1.ExchangeTokenRequest{SubjectToken: userToken, Audience: []string{"bulkhead.vault", "bulkhead.vaultbroker"}})
		if err != nil {
			t.Fatal(err)
		}
		if got.TenantID != tn.ID || got.Kind != claims.KindUser || got.Subject != tn.OwnerID || !slices.Equal(got.Roles, []string{"owner"}) || got.Actor != "svc:connection" {
			t.Fatalf("claims %+v", got)
		}
	})
	t.Run("user of the tenant", func(t *testing.T) {
		got, err := exchangeFor(conn, &identityv1.ExchangeTokenRequest{TenantId: tn.ID, UserId: bobID, Audience: []string{"bulkhead.vaultbroker"}}, broker)
		if err != nil {
			t.Fatal(err)
		}
		if got.Subject != bobID || !slices.Equal(got.Roles, []string{"viewer"}) || got.Actor != "svc:connection" {
			t.Fatalf("claims %+v", got)
		}
	})
	t.Run("background work", func(t *testing.T) {
		sync := as(t, id.ServiceToken(t, "sync", launch.Audience))
		got, err := exchangeFor(sync, &identityv1.ExchangeTokenRequest{TenantId: tn.ID, Audience: []string{"bulkhead.vaultbroker"}}, broker)
		if err != nil {
			t.Fatal(err)
		}
		// Only the caller's tenant permissions travel into the tenant.
		if got.Kind != claims.KindService || got.Subject != "sync" || got.TenantID != tn.ID ||
			!slices.Equal(got.Scopes, []string{"connections.read", "syncs.manage"}) {
			t.Fatalf("claims %+v", got)
		}
	})

	refusals := []struct {
		name   string
		ctx    context.Context
		req    *identityv1.ExchangeTokenRequest
		want   codes.Code
		reason string
	}{
		{"vault token without a subject token (user)", conn, &identityv1.ExchangeTokenRequest{TenantId: tn.ID, UserId: bobID, Audience: []string{"bulkhead.vault"}}, codes.PermissionDenied, ""},
		{"vault token without a subject token (background)", conn, &identityv1.ExchangeTokenRequest{TenantId: tn.ID, Audience: []string{"bulkhead.vault"}}, codes.PermissionDenied, ""},
		{"vault token from the caller's own background token", conn, &identityv1.ExchangeTokenRequest{SubjectToken: connBackground, Audience: []string{"bulkhead.vault"}}, codes.PermissionDenied, ""},
		{"vault token from a token the caller exchanged itself", conn, &identityv1.ExchangeTokenRequest{SubjectToken: connForBob, Audience: []string{"bulkhead.vault"}}, codes.PermissionDenied, ""},
		{"bad subject token", conn, &identityv1.ExchangeTokenRequest{SubjectToken: userToken + "x", Audience: []string{"bulkhead.vault"}}, codes.Unauthenticated, ""},
		{"service's own token as subject", conn, &identityv1.ExchangeTokenRequest{SubjectToken: id.ServiceToken(t, "sync"), Audience: []string{"bulkhead.vault"}}, codes.Unauthenticated, ""},
		{"not a member", conn, &identityv1.ExchangeTokenRequest{TenantId: tn.ID, UserId: "7d1f3f52-5d3c-4f0e-9d7e-2f4b7b0a0c11", Audience: []string{"bulkhead.vaultbroker"}}, codes.NotFound, ""},
		{"unknown tenant", conn, &identityv1.ExchangeTokenRequest{TenantId: "7d1f3f52-5d3c-4f0e-9d7e-2f4b7b0a0c11", Audience: []string{"bulkhead.vaultbroker"}}, codes.NotFound, ""},
		{"both subject token and tenant", conn, &identityv1.ExchangeTokenRequest{SubjectToken: userToken, TenantId: tn.ID, Audience: []string{"bulkhead.vault"}}, codes.InvalidArgument, ""},
		{"no audience", conn, &identityv1.ExchangeTokenRequest{TenantId: tn.ID}, codes.InvalidArgument, ""},
		{"service without tokens.exchange", as(t, id.ServiceToken(t, "vaultbroker", launch.Audience)), &identityv1.ExchangeTokenRequest{TenantId: tn.ID, Audience: []string{"bulkhead.vault"}}, codes.PermissionDenied, ""},
		{"tenant user", owner, &identityv1.ExchangeTokenRequest{TenantId: tn.ID, Audience: []string{"bulkhead.vault"}}, codes.PermissionDenied, ""},
		{"operator", as(t, id.OperatorToken(t)), &identityv1.ExchangeTokenRequest{TenantId: tn.ID, Audience: []string{"bulkhead.vault"}}, codes.PermissionDenied, ""},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.tokens.ExchangeToken(tc.ctx, tc.req)
			wantCode(t, err, tc.want)
		})
	}

	// A suspended tenant gets no token by any route.
	if _, err := c.tenants.SuspendTenant(as(t, id.OperatorToken(t)), &identityv1.SuspendTenantRequest{TenantId: tn.ID}); err != nil {
		t.Fatal(err)
	}
	for name, req := range map[string]*identityv1.ExchangeTokenRequest{
		"subject token": {SubjectToken: userToken, Audience: []string{"bulkhead.vault"}},
		"user":          {TenantId: tn.ID, UserId: bobID, Audience: []string{"bulkhead.vaultbroker"}},
		"background":    {TenantId: tn.ID, Audience: []string{"bulkhead.vaultbroker"}},
	} {
		t.Run("suspended/"+name, func(t *testing.T) {
			eventually(t, 5*time.Second, func() error {
				_, err := c.tokens.ExchangeToken(conn, req)
				if code(err) != codes.PermissionDenied || reason(err) != apierr.ReasonTenantSuspended {
					return errors.Join(errStillAccepted, err)
				}
				return nil
			})
		})
	}
}
