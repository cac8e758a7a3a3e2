// Package providertest runs a real OAuth2 authorization server (ory/fosite) and a small provider
// API on loopback, so the connection and sync services can be tested against the protocol as
// providers speak it — authorization code with PKCE, expiring access tokens, refresh-token
// rotation with reuse detection, client credentials, RFC 7009 revocation and RFC 7662
// introspection — instead of against a hand-written token endpoint.
//
// The provider API validates bearer tokens through fosite in-process, so expired or revoked tokens
// get 401 exactly as they would at a real provider. It pages deterministic per-account records,
// rate-limits with 429 + Retry-After, fails with 5xx on demand or on a schedule, and redirects to a
// second loopback server ("internal") for SSRF tests.
//
// Every request is counted and logged so tests can assert what reached the provider ("exactly one
// refresh"), and WaitFor lets a test wait for such an event instead of sleeping.
package providertest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"golang.org/x/oauth2"
)

// Grant types as they appear in token requests, for TokenRequests.
const (
	GrantAuthorizationCode = "authorization_code"
	GrantRefreshToken      = "refresh_token"
	GrantClientCredentials = "client_credentials"
)

// Endpoint paths served under Provider.URL.
const (
	PathAuthorize  = "/oauth2/auth"
	PathToken      = "/oauth2/token"
	PathRevoke     = "/oauth2/revoke"
	PathIntrospect = "/oauth2/introspect"
	PathMe         = "/api/me"
	PathRecords    = "/api/records"
	// PathRecordsLinked serves the same records as a bare JSON array, paginated by a
	// `Link: <…>; rel="next"` header instead of a cursor in the body.
	PathRecordsLinked = "/api/records/linked"
	PathRedirect      = "/api/redirect"
	// PathInternal is served by the second ("internal") server, at InternalURL.
	PathInternal = "/internal"
)

// DefaultSubject is the user the authorization endpoint approves when neither Options.Subject nor
// a login_hint names one.
const DefaultSubject = "user-1"

// Options configures a Provider. The zero value is a usable provider: one-hour access tokens,
// rotating refresh tokens, PKCE (S256) required, 25 seeded records per account.
type Options struct {
	// AccessTokenLifespan is how long access tokens live; zero means one hour. fosite rounds expiry
	// to whole seconds, so use at least one second.
	AccessTokenLifespan time.Duration
	// RefreshTokenLifespan is how long refresh tokens live; zero means 30 days.
	RefreshTokenLifespan time.Duration
	// DisableRefreshRotation keeps a used refresh token (and the access tokens issued before it)
	// valid, like providers that never rotate. With rotation on (the default), a rotated refresh
	// token is refused and presenting it again revokes the whole grant (reuse detection).
	DisableRefreshRotation bool
	// OmitExpiresIn drops expires_in from every token response. Tokens still live for
	// AccessTokenLifespan: set that long to model non-expiring tokens, short to model a provider
	// whose tokens expire without saying so.
	OmitExpiresIn bool
	// OmitRefreshTokenOnRefresh drops refresh_token from refresh responses, so a client must keep
	// the one it has. Combine with DisableRefreshRotation to model providers such as Google.
	OmitRefreshTokenOnRefresh bool
	// Subject is the user approved by the authorization endpoint when the request has no
	// login_hint; empty means DefaultSubject.
	Subject string
	// PKCEOptional lets authorization-code clients skip PKCE. By default PKCE with S256 is
	// required, so a client that forgets it fails its tests.
	PKCEOptional bool
	// API configures the provider API.
	API APIOptions
}

// APIOptions configures the provider API.
type APIOptions struct {
	// SeedRecords is how many records each account starts with; zero means 25, negative means none.
	SeedRecords int
	// DefaultPageSize is the page size when a request has no limit; zero means 10 (or
	// MaxPageSize when that is smaller).
	DefaultPageSize int
	// MaxPageSize caps limit; zero means 100. Larger limits are clamped, as most providers do.
	MaxPageSize int
	// RateLimit is how many requests an account may make per RateLimitWindow before getting 429
	// with Retry-After; zero means unlimited. Responses then carry X-RateLimit-Limit,
	// X-RateLimit-Remaining and X-RateLimit-Reset (Unix seconds).
	RateLimit int
	// RateLimitWindow is the fixed window of RateLimit; zero means one second.
	RateLimitWindow time.Duration
	// FailEvery makes every FailEvery-th authenticated request of an account answer FailStatus
	// (deterministic: the 3rd, 6th, … for 3); zero means never.
	FailEvery int
	// FailStatus is the status of scheduled failures; zero means 503.
	FailStatus int
	// RedirectTarget is where PathRedirect sends clients; empty means InternalURL+PathInternal.
	RedirectTarget string
}

func (o Options) withDefaults() Options {
	if o.AccessTokenLifespan == 0 {
		o.AccessTokenLifespan = time.Hour
	}
	if o.RefreshTokenLifespan == 0 {
		o.RefreshTokenLifespan = 30 * 24 * time.Hour
	}
	if o.Subject == "" {
		o.Subject = DefaultSubject
	}
	a := &o.API
	switch {
	case a.SeedRecords == 0:
		a.SeedRecords = 25
	case a.SeedRecords < 0:
		a.SeedRecords = 0
	}
	if a.MaxPageSize == 0 {
		a.MaxPageSize = 100
	}
	if a.DefaultPageSize == 0 {
		a.DefaultPageSize = min(10, a.MaxPageSize)
	}
	if a.RateLimitWindow == 0 {
		a.RateLimitWindow = time.Second
	}
	if a.FailStatus == 0 {
		a.FailStatus = http.StatusServiceUnavailable
	}
	return o
}

func (o Options) validate() error {
	switch {
	case o.AccessTokenLifespan < time.Second:
		return errors.New("providertest: AccessTokenLifespan below one second (fosite rounds expiry to seconds)")
	case o.RefreshTokenLifespan < time.Second:
		return errors.New("providertest: RefreshTokenLifespan below one second")
	case o.API.DefaultPageSize < 1 || o.API.MaxPageSize < o.API.DefaultPageSize:
		return errors.New("providertest: need 1 <= DefaultPageSize <= MaxPageSize")
	case o.API.RateLimit < 0 || o.API.FailEvery < 0:
		return errors.New("providertest: RateLimit and FailEvery must not be negative")
	case o.API.FailStatus < 400 || o.API.FailStatus > 599:
		return errors.New("providertest: FailStatus must be a 4xx or 5xx status")
	}
	return nil
}

// Provider is a running test provider. Its methods are safe for concurrent use.
type Provider struct {
	// URL is the base URL of the authorization server and the API, e.g. http://127.0.0.1:41234.
	URL string
	// InternalURL is the base URL of a second loopback server standing for an internal service
	// that a proxy must never reach; it counts and logs every request (InternalRequests).
	InternalURL string

	opts     Options
	cfg      *fosite.Config
	oauth    fosite.OAuth2Provider
	store    *store
	server   *httptest.Server
	internal *httptest.Server

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced whenever something is recorded
	events   events
	inject   injections
	datasets map[string]*dataset
	limits   map[string]*window // per account
	seen     map[string]int     // authenticated API requests per account, for FailEvery
	apiKeys  map[string]string  // API key → account
	basic    map[string]basicCredential
	redirect string
}

type basicCredential struct {
	password string
	account  string
}

// Start runs a provider on 127.0.0.1 with a random port; ctx bounds start-up only. The caller
// must Close it.
func Start(ctx context.Context, opts Options) (*Provider, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("providertest: global secret: %w", err)
	}

	p := &Provider{
		opts:     opts,
		store:    newStore(!opts.DisableRefreshRotation),
		changed:  make(chan struct{}),
		datasets: make(map[string]*dataset),
		limits:   make(map[string]*window),
		seen:     make(map[string]int),
		apiKeys:  make(map[string]string),
		basic:    make(map[string]basicCredential),
	}
	p.internal = httptest.NewServer(http.HandlerFunc(p.handleInternal))
	p.InternalURL = p.internal.URL
	p.redirect = opts.API.RedirectTarget
	if p.redirect == "" {
		p.redirect = p.InternalURL + PathInternal
	}

	mux := http.NewServeMux()
	p.server = httptest.NewUnstartedServer(mux)
	p.URL = "http://" + p.server.Listener.Addr().String()

	cfg := &fosite.Config{
		AccessTokenLifespan:   opts.AccessTokenLifespan,
		RefreshTokenLifespan:  opts.RefreshTokenLifespan,
		AuthorizeCodeLifespan: 10 * time.Minute,
		GlobalSecret:          secret,
		// bcrypt's minimum cost: client secrets are test values, and cost 12 would make every
		// token request take a quarter of a second on this machine.
		HashCost:      4,
		ScopeStrategy: fosite.ExactScopeStrategy,
		// Refresh tokens for every authorization-code grant, as SaaS providers do, rather than
		// only for grants holding an "offline" scope (fosite's default).
		RefreshTokenScopes:          []string{},
		EnforcePKCE:                 !opts.PKCEOptional,
		EnforcePKCEForPublicClients: true,
		SendDebugMessagesToClients:  true,
		TokenURL:                    p.URL + PathToken,
	}
	// Set explicitly: fosite's getters install these defaults lazily, writing the shared config
	// from request goroutines (a data race under concurrent requests).
	cfg.ClientSecretsHasher = &fosite.BCrypt{Config: cfg}
	cfg.AudienceMatchingStrategy = fosite.DefaultAudienceMatchingStrategy
	// JWKSFetcherStrategy (the fourth lazy default) is left alone: it is reached only for
	// private_key_jwt clients, which fosite.DefaultClient cannot be, and building one starts
	// cache goroutines that nothing would stop.
	p.cfg = cfg
	// Only the OAuth2 handlers a SaaS provider offers; no OpenID Connect, implicit or password grant.
	p.oauth = compose.Compose(cfg, p.store, compose.NewOAuth2HMACStrategy(cfg),
		compose.OAuth2AuthorizeExplicitFactory,
		compose.OAuth2ClientCredentialsGrantFactory,
		compose.OAuth2RefreshTokenGrantFactory,
		compose.OAuth2TokenIntrospectionFactory,
		compose.OAuth2TokenRevocationFactory,
		compose.OAuth2PKCEFactory,
	)

	mux.HandleFunc("GET "+PathAuthorize, p.handleAuthorize)
	mux.HandleFunc("POST "+PathToken, p.handleToken)
	mux.HandleFunc("POST "+PathRevoke, p.handleRevoke)
	mux.HandleFunc("POST "+PathIntrospect, p.handleIntrospect)
	mux.Handle("GET "+PathMe, p.api(p.handleMe))
	mux.Handle("GET "+PathRecords, p.api(p.handleRecords))
	mux.Handle("GET "+PathRecordsLinked, p.api(p.handleRecordsLinked))
	mux.Handle(PathRedirect, p.api(p.handleRedirect))
	p.server.Start()
	return p, nil
}

// New starts a provider for a test and closes it when the test ends.
func New(tb testing.TB, opts Options) *Provider {
	tb.Helper()
	p, err := Start(tb.Context(), opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(p.Close)
	return p
}

// Close stops both servers and waits for in-flight requests.
func (p *Provider) Close() {
	p.server.Close()
	p.internal.Close()
}

// AuthURL is the authorization endpoint.
func (p *Provider) AuthURL() string { return p.URL + PathAuthorize }

// TokenURL is the token endpoint.
func (p *Provider) TokenURL() string { return p.URL + PathToken }

// RevocationURL is the RFC 7009 revocation endpoint.
func (p *Provider) RevocationURL() string { return p.URL + PathRevoke }

// IntrospectionURL is the RFC 7662 introspection endpoint.
func (p *Provider) IntrospectionURL() string { return p.URL + PathIntrospect }

// Endpoint describes the provider for golang.org/x/oauth2. Clients authenticate with HTTP Basic
// (client_secret_basic); fosite accepts client_secret_post as well.
func (p *Provider) Endpoint() oauth2.Endpoint {
	return oauth2.Endpoint{AuthURL: p.AuthURL(), TokenURL: p.TokenURL(), AuthStyle: oauth2.AuthStyleInHeader}
}

// RegisterClient adds (or replaces) an OAuth2 client allowed the authorization-code,
// refresh-token and client-credentials grants for the given scopes. An empty secret registers a
// public client, which must use PKCE and cannot use client credentials.
func (p *Provider) RegisterClient(id, secret string, redirectURIs, scopes []string) error {
	if id == "" {
		return errors.New("providertest: empty client id")
	}
	for _, u := range redirectURIs {
		if parsed, err := url.Parse(u); err != nil || !parsed.IsAbs() {
			return fmt.Errorf("providertest: redirect URI %q is not absolute", u)
		}
	}
	c := &fosite.DefaultClient{
		ID:            id,
		RedirectURIs:  append([]string(nil), redirectURIs...),
		GrantTypes:    []string{GrantAuthorizationCode, GrantRefreshToken, GrantClientCredentials},
		ResponseTypes: []string{"code"},
		Scopes:        append([]string(nil), scopes...),
		Public:        secret == "",
	}
	if secret != "" {
		hashed, err := p.cfg.ClientSecretsHasher.Hash(context.Background(), []byte(secret))
		if err != nil {
			return fmt.Errorf("providertest: hash client secret: %w", err)
		}
		c.Secret = hashed
	}
	p.store.setClient(c)
	return nil
}

// AddAPIKey makes the API accept key for account, as `Authorization: Bearer <key>`, an
// `X-Api-Key` header or an `api_key` query parameter.
func (p *Provider) AddAPIKey(key, account string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.apiKeys[key] = account
}

// AddBasicCredentials makes the API accept HTTP Basic user:password for account.
func (p *Provider) AddBasicCredentials(user, password, account string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.basic[user] = basicCredential{password: password, account: account}
}

// SetRedirectTarget changes where PathRedirect sends clients.
func (p *Provider) SetRedirectTarget(target string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.redirect = target
}

// RevokeAllGrants invalidates every access and refresh token issued so far, as when users
// disconnect the app at the provider. Later refreshes fail with invalid_grant.
func (p *Provider) RevokeAllGrants(ctx context.Context) error {
	return p.store.revokeAll(ctx)
}

// Approve follows an authorization URL the way a browser would up to the provider's answer, and
// returns the redirect it answers with: the client's redirect URI with code and state, or with
// error=… when the request was refused. It does not follow that redirect.
func (p *Provider) Approve(ctx context.Context, authURL string) (*url.URL, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, authURL, nil)
	if err != nil {
		return nil, fmt.Errorf("providertest: approve: %w", err)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("providertest: approve: %w", err)
	}
	defer resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode < 300 || resp.StatusCode > 399 || loc == "" {
		return nil, fmt.Errorf("providertest: approve: authorization endpoint answered %d without a redirect", resp.StatusCode)
	}
	return url.Parse(loc)
}

// WaitFor blocks until cond returns true or ctx ends. cond is re-evaluated each time the provider
// records a request, so tests wait on events rather than sleeping.
func (p *Provider) WaitFor(ctx context.Context, cond func() bool) error {
	for {
		p.mu.Lock()
		ch := p.changed
		p.mu.Unlock()
		if cond() {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("providertest: wait: %w", ctx.Err())
		}
	}
}

// notifyLocked wakes WaitFor callers; p.mu must be held.
func (p *Provider) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *Provider) handleInternal(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.events.internal = append(p.events.internal, InternalRequest{
		Method:        r.Method,
		Path:          r.URL.Path,
		Authorization: r.Header.Get("Authorization"),
	})
	p.notifyLocked()
	p.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte("internal-only\n"))
}

// bearerToken returns the token of an `Authorization: Bearer` header.
func bearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return "", false
	}
	return token, true
}
