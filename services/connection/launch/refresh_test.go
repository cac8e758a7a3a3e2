package launch_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	connectionv1 "github.com/bulkhead/bulkhead/gen/bulkhead/connection/v1"
	"github.com/bulkhead/bulkhead/pkg/providertest"
	"github.com/bulkhead/bulkhead/services/connection/connectiontest"
	"github.com/bulkhead/bulkhead/services/connection/internal/store"
	"github.com/bulkhead/bulkhead/services/connection/internal/store/postgres"
)

// oauthFixture is an env with a clock, a tenant and one org-level OAuth connection.
type oauthFixture struct {
	env    *connectiontest.Env
	clk    *clock
	tenant connectiontest.Tenant
	owner  string // the owner's token
	sync   string // the sync service's own token (the hop GetAccessToken needs)
	connID string
}

func newOAuthFixture(t *testing.T, popts providertest.Options, instances int) *oauthFixture {
	t.Helper()
	clk := &clock{}
	env := connectiontest.Start(t, connectiontest.Options{Now: clk.now, Provider: popts})
	for len(env.Instances) < instances {
		env.StartInstance(t)
	}
	f := &oauthFixture{env: env, clk: clk}
	f.tenant = env.NewTenant(t, "acme")
	f.owner = env.Identity.Token(t, f.tenant.OwnerKey)
	f.sync = env.Identity.ServiceToken(t, "sync")
	f.connID = env.Authorize(t, as(t, f.owner), 0, &connectionv1.StartAuthorizationRequest{
		TenantId: f.tenant.ID, Integration: connectiontest.OAuthOrg,
	})
	return f
}

func (f *oauthFixture) token(t *testing.T, instance int, req *connectionv1.GetAccessTokenRequest) (*connectionv1.GetAccessTokenResponse, error) {
	if req == nil {
		req = &connectionv1.GetAccessTokenRequest{}
	}
	req.TenantId, req.ConnectionId = f.tenant.ID, f.connID
	return f.env.Connections(t, instance).GetAccessToken(viaService(t, f.owner, f.sync), req)
}

func (f *oauthFixture) get(t *testing.T) *connectionv1.Connection {
	t.Helper()
	resp, err := f.env.Connections(t, 0).GetConnection(as(t, f.owner), &connectionv1.GetConnectionRequest{TenantId: f.tenant.ID, ConnectionId: f.connID})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetConnection()
}

// events reads the connection's outbox events as the superuser would see them in its tenant.
func (f *oauthFixture) events(t *testing.T) []store.EventType {
	t.Helper()
	evs, err := postgres.New(f.env.DB.AppDB(t)).Events(testCtx(t), f.tenant.ID, f.connID)
	if err != nil {
		t.Fatal(err)
	}
	var out []store.EventType
	for _, e := range evs {
		out = append(out, e.Type)
	}
	return out
}

// TestRefreshRace: 50 concurrent GetAccessToken calls, spread over two service instances, on a
// token inside the refresh margin cause exactly one refresh request at the provider, and every
// caller gets the refreshed token.
func TestRefreshRace(t *testing.T) {
	f := newOAuthFixture(t, providertest.Options{AccessTokenLifespan: time.Hour}, 2)
	first, err := f.token(t, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := f.env.Provider.TokenRequests(providertest.GrantRefreshToken); n != 0 {
		t.Fatalf("%d refreshes before the token was due", n)
	}
	f.clk.advance(57 * time.Minute) // inside the 5 minute margin, not expired

	const callers = 50
	tokens := make([]string, callers)
	errs := make([]error, callers)
	// Contexts (and their service tokens) are built before the start signal, so the calls
	// really overlap.
	ctxs := make([]context.Context, callers)
	for i := range ctxs {
		ctxs[i] = viaService(t, f.owner, f.sync)
	}
	clients := []connectionv1.ConnectionServiceClient{f.env.Connections(t, 0), f.env.Connections(t, 1)}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			resp, err := clients[i%2].GetAccessToken(ctxs[i], &connectionv1.GetAccessTokenRequest{TenantId: f.tenant.ID, ConnectionId: f.connID})
			tokens[i], errs[i] = resp.GetAccessToken(), err
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("caller %d: %v", i, err)
		}
	}
	if n := f.env.Provider.TokenRequests(providertest.GrantRefreshToken); n != 1 {
		t.Fatalf("%d refresh requests reached the provider, want exactly 1", n)
	}
	for i, tok := range tokens {
		if tok != tokens[0] || tok == first.GetAccessToken() {
			t.Fatalf("caller %d got a different or the old token", i)
		}
	}
	if evs := f.events(t); slices.Index(evs, store.EventRefreshed) < 0 || len(evs) != 2 {
		t.Fatalf("events %v, want created and one refreshed", evs)
	}
	// The refreshed token is fresh: the next call does not refresh again.
	if _, err := f.token(t, 1, nil); err != nil {
		t.Fatal(err)
	}
	if n := f.env.Provider.TokenRequests(providertest.GrantRefreshToken); n != 1 {
		t.Fatalf("a fresh token was refreshed again (%d refreshes)", n)
	}
}

// TestForceRefreshOnce: callers that all saw the provider reject the same credential version
// force one refresh between them; the rest get the new token.
func TestForceRefreshOnce(t *testing.T) {
	f := newOAuthFixture(t, providertest.Options{}, 2)
	first, err := f.token(t, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := range 4 {
		resp, err := f.token(t, i%2, &connectionv1.GetAccessTokenRequest{ForceRefresh: true, RejectedCredentialVersion: first.GetCredentialVersion()})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, resp.GetAccessToken())
	}
	if n := f.env.Provider.TokenRequests(providertest.GrantRefreshToken); n != 1 {
		t.Fatalf("%d refreshes, want 1", n)
	}
	for i, tok := range got {
		if tok == first.GetAccessToken() || tok != got[0] {
			t.Fatalf("call %d: tokens after forced refreshes are not one new token", i)
		}
	}
}

// TestRefreshKeepsRefreshToken: a provider that returns no refresh token on refresh (and does
// not rotate) keeps working, because the old refresh token is kept.
func TestRefreshKeepsRefreshToken(t *testing.T) {
	f := newOAuthFixture(t, providertest.Options{OmitRefreshTokenOnRefresh: true, DisableRefreshRotation: true}, 1)
	for i := range 3 {
		f.clk.advance(58 * time.Minute)
		if _, err := f.token(t, 0, nil); err != nil {
			t.Fatalf("refresh %d: %v", i+1, err)
		}
	}
	if n := f.env.Provider.TokenRequests(providertest.GrantRefreshToken); n != 3 {
		t.Fatalf("%d refreshes, want 3", n)
	}
}

// TestRefreshRejectedNeedsReauth: when the provider answers invalid_grant, the connection
// moves to needs_reauth with a refresh_failed event; re-authorizing in place keeps its id and
// emits recovered.
func TestRefreshRejectedNeedsReauth(t *testing.T) {
	f := newOAuthFixture(t, providertest.Options{}, 1)
	if err := f.env.Provider.RevokeAllGrants(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	f.clk.advance(58 * time.Minute)
	_, err := f.token(t, 0, nil)
	wantReason(t, err, codes.FailedPrecondition, "CONNECTION_NEEDS_REAUTH")
	c := f.get(t)
	if c.GetStatus() != connectionv1.ConnectionStatus_CONNECTION_STATUS_NEEDS_REAUTH || c.GetHealth().GetConsecutiveFailures() != 1 ||
		c.GetHealth().GetLastFailureReason() != "invalid_grant" || c.GetHealth().GetLastFailureTime() == nil {
		t.Fatalf("after invalid_grant: %v", c)
	}
	// Further calls do not hammer the provider.
	_, err = f.token(t, 0, nil)
	wantReason(t, err, codes.FailedPrecondition, "CONNECTION_NEEDS_REAUTH")
	if n := f.env.Provider.TokenRequests(providertest.GrantRefreshToken); n != 1 {
		t.Fatalf("%d refreshes, want 1", n)
	}

	id := f.env.Authorize(t, as(t, f.owner), 0, &connectionv1.StartAuthorizationRequest{
		TenantId: f.tenant.ID, Integration: connectiontest.OAuthOrg, ConnectionId: f.connID,
	})
	if id != f.connID {
		t.Fatalf("re-authorization made connection %s, want %s in place", id, f.connID)
	}
	c = f.get(t)
	if c.GetStatus() != connectionv1.ConnectionStatus_CONNECTION_STATUS_ACTIVE || c.GetHealth().GetConsecutiveFailures() != 0 {
		t.Fatalf("after re-authorization: %v", c)
	}
	if _, err := f.token(t, 0, nil); err != nil {
		t.Fatal(err)
	}
	want := []store.EventType{store.EventCreated, store.EventRefreshFailed, store.EventReauthorized, store.EventRecovered}
	if evs := f.events(t); !slices.Equal(evs, want) {
		t.Fatalf("events %v, want %v", evs, want)
	}
}

// TestRefreshTransientFailure: a 503 from the token endpoint keeps the connection active and
// hands out the still-valid token; the next successful refresh emits recovered.
func TestRefreshTransientFailure(t *testing.T) {
	f := newOAuthFixture(t, providertest.Options{}, 1)
	first, err := f.token(t, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.env.Provider.FailNextTokenRequests(1, 503)
	f.clk.advance(57 * time.Minute)
	got, err := f.token(t, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.GetAccessToken() != first.GetAccessToken() {
		t.Fatal("a failed refresh changed the token")
	}
	c := f.get(t)
	if c.GetStatus() != connectionv1.ConnectionStatus_CONNECTION_STATUS_ACTIVE || c.GetHealth().GetConsecutiveFailures() != 1 {
		t.Fatalf("after a 503: %v", c)
	}
	again, err := f.token(t, 0, nil)
	if err != nil || again.GetAccessToken() == first.GetAccessToken() {
		t.Fatalf("second attempt: %v", err)
	}
	want := []store.EventType{store.EventCreated, store.EventRefreshFailed, store.EventRefreshed, store.EventRecovered}
	if evs := f.events(t); !slices.Equal(evs, want) {
		t.Fatalf("events %v, want %v", evs, want)
	}
	// Once the token has expired, a failing provider is reported as unavailable.
	f.env.Provider.FailNextTokenRequests(1, 503)
	f.clk.advance(2 * time.Hour)
	_, err = f.token(t, 0, nil)
	wantCode(t, err, codes.Unavailable)
}

// TestTokensWithoutExpiryAreChecked: a token response without expires_in gives a connection
// with no expiry that is still refreshed once its periodic check is due, instead of never.
func TestTokensWithoutExpiryAreChecked(t *testing.T) {
	f := newOAuthFixture(t, providertest.Options{OmitExpiresIn: true, AccessTokenLifespan: 48 * time.Hour}, 1)
	c := f.get(t)
	if c.GetHealth().GetAccessTokenExpireTime() != nil || c.GetHealth().GetNextCheckTime() == nil {
		t.Fatalf("health of a token without expiry: %v", c.GetHealth())
	}
	if _, err := f.token(t, 0, nil); err != nil {
		t.Fatal(err)
	}
	if n := f.env.Provider.TokenRequests(providertest.GrantRefreshToken); n != 0 {
		t.Fatalf("refreshed before the check was due (%d)", n)
	}
	f.clk.advance(25 * time.Hour)
	if _, err := f.token(t, 0, nil); err != nil {
		t.Fatal(err)
	}
	if n := f.env.Provider.TokenRequests(providertest.GrantRefreshToken); n != 1 {
		t.Fatalf("%d refreshes after the check was due, want 1", n)
	}
	if next := f.get(t).GetHealth().GetNextCheckTime().AsTime(); !next.After(f.clk.now().Add(23 * time.Hour)) {
		t.Fatalf("next check at %v, want about a day later", next)
	}
}
