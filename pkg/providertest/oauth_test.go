package providertest_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/bulkhead/bulkhead/pkg/providertest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	clientID     = "app"
	clientSecret = "app-secret"
	redirectURL  = "http://127.0.0.1:9/callback"
)

var scopes = []string{"records.read", "records.write"}

// newProvider starts a provider with the standard confidential client registered.
func newProvider(t *testing.T, opts providertest.Options) *providertest.Provider {
	t.Helper()
	p := providertest.New(t, opts)
	if err := p.RegisterClient(clientID, clientSecret, []string{redirectURL}, scopes); err != nil {
		t.Fatal(err)
	}
	return p
}

func oauthConfig(p *providertest.Provider) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     clientID,
		ClientSecret: clientSecret,
		Endpoint:     p.Endpoint(),
		RedirectURL:  redirectURL,
		Scopes:       scopes,
	}
}

// authorize runs the authorization-code flow with PKCE for user and returns the token.
func authorize(t *testing.T, p *providertest.Provider, user string) *oauth2.Token {
	t.Helper()
	ctx := t.Context()
	conf := oauthConfig(p)
	verifier := oauth2.GenerateVerifier()
	const state = "state-0123456789"
	loc, err := p.Approve(ctx, conf.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("login_hint", user)))
	if err != nil {
		t.Fatal(err)
	}
	if got := loc.Query().Get("state"); got != state {
		t.Fatalf("state = %q, want %q", got, state)
	}
	tok, err := conf.Exchange(ctx, loc.Query().Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	return tok
}

// apiGet calls the provider API with a bearer token and returns the status and body.
func apiGet(t *testing.T, rawURL, token string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return do(t, req)
}

func do(t *testing.T, req *http.Request) (int, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

// postForm posts a form to an OAuth endpoint as the standard client and decodes a JSON answer.
func postForm(t *testing.T, endpoint string, form url.Values) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(clientID, clientSecret)
	status, body := do(t, req)
	var m map[string]any
	if len(body) > 0 {
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("decode %s: %v", body, err)
		}
	}
	return status, m
}

func me(t *testing.T, p *providertest.Provider, token string) (int, map[string]any) {
	t.Helper()
	status, body := apiGet(t, p.URL+providertest.PathMe, token)
	var m map[string]any
	_ = json.Unmarshal(body, &m)
	return status, m
}

func errorCode(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		return re.ErrorCode
	}
	return ""
}

func TestAuthorizationCodeWithPKCE(t *testing.T) {
	p := newProvider(t, providertest.Options{})
	tok := authorize(t, p, "alice")

	if tok.AccessToken == "" || tok.RefreshToken == "" {
		t.Fatalf("token lacks access or refresh token: %+v", tok)
	}
	if tok.Expiry.IsZero() || !tok.Expiry.After(time.Now()) {
		t.Fatalf("expiry = %v, want in the future", tok.Expiry)
	}
	status, m := me(t, p, tok.AccessToken)
	if status != http.StatusOK {
		t.Fatalf("/api/me = %d", status)
	}
	if m["account"] != "alice" || m["client_id"] != clientID || m["auth"] != providertest.KindOAuth2 {
		t.Fatalf("/api/me = %v", m)
	}
	if got := p.TokenRequests(providertest.GrantAuthorizationCode); got != 1 {
		t.Fatalf("authorization_code requests = %d, want 1", got)
	}
	auths := p.Authorizations()
	if len(auths) != 1 || auths[0].Subject != "alice" || auths[0].ClientID != clientID {
		t.Fatalf("authorizations = %+v", auths)
	}
}

func TestAuthorizationCodeRefusals(t *testing.T) {
	p := newProvider(t, providertest.Options{})
	conf := oauthConfig(p)
	const state = "state-0123456789"

	t.Run("no PKCE challenge", func(t *testing.T) {
		loc, err := p.Approve(t.Context(), conf.AuthCodeURL(state))
		if err != nil {
			t.Fatal(err)
		}
		if got := loc.Query().Get("error"); got != "invalid_request" {
			t.Fatalf("error = %q, want invalid_request (%s)", got, loc)
		}
	})
	t.Run("plain PKCE challenge", func(t *testing.T) {
		loc, err := p.Approve(t.Context(), conf.AuthCodeURL(state,
			oauth2.SetAuthURLParam("code_challenge", strings.Repeat("a", 43)),
			oauth2.SetAuthURLParam("code_challenge_method", "plain")))
		if err != nil {
			t.Fatal(err)
		}
		if loc.Query().Get("error") == "" {
			t.Fatalf("plain challenge accepted: %s", loc)
		}
	})

	exchangeCases := []struct {
		name     string
		verifier func(real string) []oauth2.AuthCodeOption
		reuse    bool
		wantCode string
	}{
		{"wrong verifier", func(string) []oauth2.AuthCodeOption {
			return []oauth2.AuthCodeOption{oauth2.VerifierOption(oauth2.GenerateVerifier())}
		}, false, "invalid_grant"},
		{"missing verifier", func(string) []oauth2.AuthCodeOption { return nil }, false, "invalid_grant"},
		{"code used twice", func(v string) []oauth2.AuthCodeOption {
			return []oauth2.AuthCodeOption{oauth2.VerifierOption(v)}
		}, true, "invalid_grant"},
	}
	for _, tc := range exchangeCases {
		t.Run(tc.name, func(t *testing.T) {
			verifier := oauth2.GenerateVerifier()
			loc, err := p.Approve(t.Context(), conf.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier)))
			if err != nil {
				t.Fatal(err)
			}
			code := loc.Query().Get("code")
			if tc.reuse {
				if _, err := conf.Exchange(t.Context(), code, oauth2.VerifierOption(verifier)); err != nil {
					t.Fatalf("first exchange: %v", err)
				}
			}
			_, err = conf.Exchange(t.Context(), code, tc.verifier(verifier)...)
			if got := errorCode(err); got != tc.wantCode {
				t.Fatalf("error code = %q (%v), want %q", got, err, tc.wantCode)
			}
		})
	}

	t.Run("denied by the user", func(t *testing.T) {
		p.DenyNextAuthorizations(1)
		loc, err := p.Approve(t.Context(), conf.AuthCodeURL(state, oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
		if err != nil {
			t.Fatal(err)
		}
		if got := loc.Query().Get("error"); got != "access_denied" || loc.Query().Get("state") != state {
			t.Fatalf("redirect = %s, want error=access_denied with state", loc)
		}
		// Only the next one is denied.
		tok := authorize(t, p, "bob")
		if status, _ := me(t, p, tok.AccessToken); status != http.StatusOK {
			t.Fatalf("/api/me after denial = %d", status)
		}
	})
}

func refresh(t *testing.T, p *providertest.Provider, refreshToken string) (*oauth2.Token, error) {
	t.Helper()
	return oauthConfig(p).TokenSource(t.Context(), &oauth2.Token{RefreshToken: refreshToken}).Token()
}

func TestRefreshRotation(t *testing.T) {
	p := newProvider(t, providertest.Options{})
	first := authorize(t, p, "alice")

	second, err := refresh(t, p, first.RefreshToken)
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if second.RefreshToken == "" || second.RefreshToken == first.RefreshToken {
		t.Fatalf("refresh token not rotated")
	}
	if status, _ := me(t, p, first.AccessToken); status != http.StatusUnauthorized {
		t.Fatalf("old access token after rotation: /api/me = %d, want 401", status)
	}
	if status, _ := me(t, p, second.AccessToken); status != http.StatusOK {
		t.Fatalf("new access token: /api/me = %d, want 200", status)
	}

	// Presenting the rotated token again is reuse: refused, and the whole grant is revoked.
	if _, err := refresh(t, p, first.RefreshToken); errorCode(err) != "invalid_grant" {
		t.Fatalf("old refresh token after rotation: %v, want invalid_grant", err)
	}
	if status, _ := me(t, p, second.AccessToken); status != http.StatusUnauthorized {
		t.Fatalf("access token after reuse detection: /api/me = %d, want 401", status)
	}
	if _, err := refresh(t, p, second.RefreshToken); errorCode(err) != "invalid_grant" {
		t.Fatalf("newest refresh token after reuse detection: %v, want invalid_grant", err)
	}
	if got := p.TokenRequests(providertest.GrantRefreshToken); got != 3 {
		t.Fatalf("refresh requests = %d, want 3", got)
	}
}

func TestRefreshWithoutRotation(t *testing.T) {
	p := newProvider(t, providertest.Options{DisableRefreshRotation: true, OmitRefreshTokenOnRefresh: true})
	first := authorize(t, p, "alice")

	for i := range 3 {
		status, body := postForm(t, p.TokenURL(), url.Values{"grant_type": {"refresh_token"}, "refresh_token": {first.RefreshToken}})
		if status != http.StatusOK {
			t.Fatalf("refresh %d = %d %v", i, status, body)
		}
		if _, ok := body["refresh_token"]; ok {
			t.Fatalf("refresh %d returned a refresh token, want it omitted: %v", i, body)
		}
		if status, _ := me(t, p, body["access_token"].(string)); status != http.StatusOK {
			t.Fatalf("access token of refresh %d: /api/me = %d", i, status)
		}
	}
	// Without rotation, earlier access tokens stay valid until they expire.
	if status, _ := me(t, p, first.AccessToken); status != http.StatusOK {
		t.Fatalf("first access token: /api/me = %d, want 200", status)
	}

	// Revoking the grant revokes every token it issued, not only the newest.
	if status, body := postForm(t, p.RevocationURL(), url.Values{"token": {first.RefreshToken}, "token_type_hint": {"refresh_token"}}); status != http.StatusOK {
		t.Fatalf("revoke = %d %v", status, body)
	}
	if status, _ := me(t, p, first.AccessToken); status != http.StatusUnauthorized {
		t.Fatalf("first access token after revocation: /api/me = %d, want 401", status)
	}
	if _, err := refresh(t, p, first.RefreshToken); errorCode(err) != "invalid_grant" {
		t.Fatalf("refresh after revocation: %v, want invalid_grant", err)
	}
}

func TestAccessTokenExpiry(t *testing.T) {
	// fosite rounds expiry to the second, so a 3 s token lives at least 2.5 s: room for the first
	// call below on a loaded machine.
	p := newProvider(t, providertest.Options{AccessTokenLifespan: 3 * time.Second})
	tok := authorize(t, p, "alice")
	if d := time.Until(tok.Expiry); d > 4*time.Second {
		t.Fatalf("expiry in %v, want about 3 s", d)
	}
	if status, _ := me(t, p, tok.AccessToken); status != http.StatusOK {
		t.Fatalf("fresh token: /api/me = %d", status)
	}
	waitForStatus(t, p.URL+providertest.PathMe, tok.AccessToken, http.StatusUnauthorized)

	// The refresh token outlives the access token.
	next, err := refresh(t, p, tok.RefreshToken)
	if err != nil {
		t.Fatalf("refresh after expiry: %v", err)
	}
	if status, _ := me(t, p, next.AccessToken); status != http.StatusOK {
		t.Fatalf("refreshed token: /api/me = %d", status)
	}
}

// waitForStatus polls an API URL until it answers want, failing after a deadline.
func waitForStatus(t *testing.T, rawURL, token string, want int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if status, _ := apiGet(t, rawURL, token); status == want {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s never answered %d", rawURL, want)
		case <-tick.C:
		}
	}
}

func TestOmitExpiresIn(t *testing.T) {
	p := newProvider(t, providertest.Options{OmitExpiresIn: true})
	status, body := postForm(t, p.TokenURL(), url.Values{"grant_type": {"client_credentials"}, "scope": {"records.read"}})
	if status != http.StatusOK {
		t.Fatalf("token = %d %v", status, body)
	}
	if _, ok := body["expires_in"]; ok {
		t.Fatalf("expires_in present: %v", body)
	}
	if status, _ := me(t, p, body["access_token"].(string)); status != http.StatusOK {
		t.Fatalf("/api/me = %d", status)
	}
}

func TestRevocation(t *testing.T) {
	p := newProvider(t, providertest.Options{})

	t.Run("access token", func(t *testing.T) {
		tok := authorize(t, p, "alice")
		status, body := postForm(t, p.RevocationURL(), url.Values{"token": {tok.AccessToken}, "token_type_hint": {"access_token"}})
		if status != http.StatusOK {
			t.Fatalf("revoke = %d %v", status, body)
		}
		if status, _ := me(t, p, tok.AccessToken); status != http.StatusUnauthorized {
			t.Fatalf("/api/me after revocation = %d, want 401", status)
		}
		// RFC 7009 §2.1: revoking an access token may revoke its grant; fosite does.
		if _, err := refresh(t, p, tok.RefreshToken); errorCode(err) != "invalid_grant" {
			t.Fatalf("refresh after revocation: %v, want invalid_grant", err)
		}
	})

	t.Run("refresh token with an injected failure first", func(t *testing.T) {
		tok := authorize(t, p, "bob")
		p.FailNextRevocations(1, http.StatusServiceUnavailable)
		form := url.Values{"token": {tok.RefreshToken}, "token_type_hint": {"refresh_token"}}
		if status, _ := postForm(t, p.RevocationURL(), form); status != http.StatusServiceUnavailable {
			t.Fatalf("first revoke = %d, want 503", status)
		}
		if status, _ := me(t, p, tok.AccessToken); status != http.StatusOK {
			t.Fatalf("failed revocation revoked anyway: /api/me = %d", status)
		}
		if status, _ := postForm(t, p.RevocationURL(), form); status != http.StatusOK {
			t.Fatalf("second revoke = %d, want 200", status)
		}
		if status, _ := me(t, p, tok.AccessToken); status != http.StatusUnauthorized {
			t.Fatalf("/api/me after revocation = %d, want 401", status)
		}
		revs := p.Revocations()
		if len(revs) != 3 {
			t.Fatalf("revocations = %d, want 3", len(revs))
		}
		last := revs[2]
		if last.Token != tok.RefreshToken || last.TokenTypeHint != "refresh_token" || last.ClientID != clientID || last.Status != http.StatusOK || last.Injected {
			t.Fatalf("last revocation = %+v", last)
		}
		if !revs[1].Injected || revs[1].Status != http.StatusServiceUnavailable {
			t.Fatalf("injected revocation = %+v", revs[1])
		}
	})

	t.Run("all grants at the provider", func(t *testing.T) {
		tok := authorize(t, p, "carol")
		if err := p.RevokeAllGrants(t.Context()); err != nil {
			t.Fatal(err)
		}
		if status, _ := me(t, p, tok.AccessToken); status != http.StatusUnauthorized {
			t.Fatalf("/api/me = %d, want 401", status)
		}
		if _, err := refresh(t, p, tok.RefreshToken); errorCode(err) != "invalid_grant" {
			t.Fatalf("refresh: %v, want invalid_grant", err)
		}
	})
}

func TestIntrospection(t *testing.T) {
	p := newProvider(t, providertest.Options{})
	tok := authorize(t, p, "alice")
	status, body := postForm(t, p.IntrospectionURL(), url.Values{"token": {tok.AccessToken}})
	if status != http.StatusOK || body["active"] != true || body["sub"] != "alice" || body["client_id"] != clientID {
		t.Fatalf("introspect = %d %v", status, body)
	}
	postForm(t, p.RevocationURL(), url.Values{"token": {tok.AccessToken}})
	if status, body := postForm(t, p.IntrospectionURL(), url.Values{"token": {tok.AccessToken}}); body["active"] != false {
		t.Fatalf("introspect after revocation = %d %v", status, body)
	}
}

func TestClientCredentials(t *testing.T) {
	p := newProvider(t, providertest.Options{})
	if err := p.RegisterClient("public", "", []string{redirectURL}, scopes); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		id       string
		secret   string
		scopes   []string
		wantCode string
	}{
		{"granted", clientID, clientSecret, []string{"records.read"}, ""},
		{"wrong secret", clientID, "nope", nil, "invalid_client"},
		{"unknown client", "ghost", clientSecret, nil, "invalid_client"},
		{"scope not allowed", clientID, clientSecret, []string{"admin"}, "invalid_scope"},
		// fosite answers invalid_grant: the client authenticated (as public) but may not use the grant.
		{"public client", "public", "", nil, "invalid_grant"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conf := clientcredentials.Config{
				ClientID: tc.id, ClientSecret: tc.secret, TokenURL: p.TokenURL(), Scopes: tc.scopes,
				AuthStyle: oauth2.AuthStyleInHeader,
			}
			tok, err := conf.Token(t.Context())
			if got := errorCode(err); got != tc.wantCode {
				t.Fatalf("error code = %q (%v), want %q", got, err, tc.wantCode)
			}
			if tc.wantCode != "" {
				return
			}
			if tok.RefreshToken != "" {
				t.Fatalf("client credentials returned a refresh token")
			}
			status, m := me(t, p, tok.AccessToken)
			if status != http.StatusOK || m["account"] != clientID {
				t.Fatalf("/api/me = %d %v", status, m)
			}
		})
	}
	if got := p.TokenRequests(providertest.GrantClientCredentials); got != len(cases) {
		t.Fatalf("client_credentials requests = %d, want %d", got, len(cases))
	}
}

func TestRefreshTokenIsNotAnAPICredential(t *testing.T) {
	p := newProvider(t, providertest.Options{})
	tok := authorize(t, p, "alice")
	if status, _ := me(t, p, tok.RefreshToken); status != http.StatusUnauthorized {
		t.Fatalf("refresh token as bearer: /api/me = %d, want 401", status)
	}
}

func TestInjectedTokenFailures(t *testing.T) {
	cases := []struct {
		status   int
		wantCode string
	}{
		{http.StatusBadRequest, "invalid_grant"},
		{http.StatusServiceUnavailable, "server_error"},
	}
	for _, tc := range cases {
		t.Run(http.StatusText(tc.status), func(t *testing.T) {
			p := newProvider(t, providertest.Options{})
			tok := authorize(t, p, "alice")
			p.FailNextTokenRequests(2, tc.status)
			for i := range 2 {
				_, err := refresh(t, p, tok.RefreshToken)
				var re *oauth2.RetrieveError
				if !errors.As(err, &re) || re.Response.StatusCode != tc.status || re.ErrorCode != tc.wantCode {
					t.Fatalf("refresh %d: %v, want %d %s", i, err, tc.status, tc.wantCode)
				}
			}
			// Injected failures leave the grant alone: the same refresh token now works.
			if _, err := refresh(t, p, tok.RefreshToken); err != nil {
				t.Fatalf("refresh after injected failures: %v", err)
			}
			log := p.TokenRequestLog()
			want := []providertest.TokenRequest{
				{GrantType: "authorization_code", ClientID: clientID, Status: 200},
				{GrantType: "refresh_token", ClientID: clientID, Status: tc.status, Injected: true},
				{GrantType: "refresh_token", ClientID: clientID, Status: tc.status, Injected: true},
				{GrantType: "refresh_token", ClientID: clientID, Status: 200},
			}
			if len(log) != len(want) {
				t.Fatalf("log = %+v", log)
			}
			for i := range want {
				if log[i] != want[i] {
					t.Fatalf("log[%d] = %+v, want %+v", i, log[i], want[i])
				}
			}
		})
	}
}

func TestTokenCountersUnderConcurrency(t *testing.T) {
	p := newProvider(t, providertest.Options{})
	conf := clientcredentials.Config{ClientID: clientID, ClientSecret: clientSecret, TokenURL: p.TokenURL(), AuthStyle: oauth2.AuthStyleInHeader}
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			_, err := conf.Token(t.Context())
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := p.TokenRequests(providertest.GrantClientCredentials); got != n {
		t.Fatalf("client_credentials requests = %d, want %d", got, n)
	}
	if got := p.TokenRequests(providertest.GrantRefreshToken); got != 0 {
		t.Fatalf("refresh requests = %d, want 0", got)
	}
}

func TestWaitFor(t *testing.T) {
	p := newProvider(t, providertest.Options{})
	tok := authorize(t, p, "alice")
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = refresh(t, p, tok.RefreshToken)
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := p.WaitFor(ctx, func() bool { return p.TokenRequests(providertest.GrantRefreshToken) == 1 }); err != nil {
		t.Fatal(err)
	}
	<-done

	short, cancelShort := context.WithCancel(t.Context())
	cancelShort()
	if err := p.WaitFor(short, func() bool { return false }); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitFor on a cancelled context = %v", err)
	}
}
