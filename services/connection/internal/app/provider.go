package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/services/connection/internal/broker"
	"github.com/bulkhead/bulkhead/services/connection/internal/catalog"
	"github.com/bulkhead/bulkhead/services/connection/internal/egress"
	"github.com/bulkhead/bulkhead/services/connection/internal/store"
)

// Keys of the credential maps stored in the vault-broker (the broker allows [A-Za-z0-9_.-]).
const (
	credAccessToken   = "access_token"
	credRefreshToken  = "refresh_token"
	credTokenType     = "token_type"
	credExpiry        = "expiry"         // RFC 3339; absent: no expiry
	credRefreshExpiry = "refresh_expiry" // RFC 3339; absent: unknown
	credScope         = "scope"
	credClientID      = "client_id"
	credClientSecret  = "client_secret"
	credAPIKey        = "api_key"
	credUsername      = "username"
	credPassword      = "password"
	// credOAuthSecret is the key of a tenant's OAuth client secret (its own broker entry).
	credOAuthSecret = "client_secret"
)

// errRejected means the provider refused the credential itself (401/403, invalid_grant,
// invalid_client): only new credentials fix it.
var errRejected = errors.New("provider rejected the credential")

// providerError is a provider failure that says nothing secret: the status or the OAuth2
// error code.
type providerError struct {
	reason   string
	rejected bool
	// permanent: asking again cannot succeed (a revocation the provider refused for good).
	permanent bool
}

func (e *providerError) Error() string { return e.reason }
func (e *providerError) Unwrap() error {
	if e.rejected {
		return errRejected
	}
	return nil
}

// unavailable maps a transient provider failure to what a caller sees.
func unavailable(err error) error {
	return apierr.Unavailable("provider", 5*time.Second).WithCause(err)
}

// oauthApp returns the OAuth client to use for integration key in tenantID: the tenant's own
// (its secret read from the vault-broker) or the platform's.
func (a *App) oauthApp(ctx context.Context, tenantID, key string) (OAuthClient, error) {
	s, err := a.store.GetSettings(ctx, tenantID, key)
	if errors.Is(err, store.ErrNotFound) {
		s, err = store.Settings{}, nil
	}
	if err != nil {
		return OAuthClient{}, err
	}
	return a.oauthAppFor(ctx, tenantID, key, s)
}

func (a *App) oauthAppFor(ctx context.Context, tenantID, key string, s store.Settings) (OAuthClient, error) {
	if s.OAuthClientID != "" {
		cred, err := a.creds.Get(ctx, tenantID, s.OAuthSecretID, 0)
		if err != nil {
			if errors.Is(err, broker.ErrNotFound) {
				return OAuthClient{}, apierr.FailedPrecondition(ReasonOAuthAppMissing, "the tenant's OAuth client secret is missing: set the OAuth app again").WithCause(err)
			}
			return OAuthClient{}, err
		}
		return OAuthClient{ClientID: s.OAuthClientID, ClientSecret: cred.Data[credOAuthSecret]}, nil
	}
	if app, ok := a.platform[key]; ok && app.ClientID != "" {
		return app, nil
	}
	return OAuthClient{}, apierr.FailedPrecondition(ReasonOAuthAppMissing, "no OAuth app is configured for %s: set the tenant's own in its integration settings", key)
}

// oauthConfig builds the golang.org/x/oauth2 configuration for a provider's endpoints.
func (a *App) oauthConfig(p *catalog.Provider, e catalog.Endpoints, app OAuthClient, scopes []string) *oauth2.Config {
	style := oauth2.AuthStyleAutoDetect
	switch p.OAuth2.TokenAuthMethod {
	case catalog.TokenAuthBasic:
		style = oauth2.AuthStyleInHeader
	case catalog.TokenAuthInBody:
		style = oauth2.AuthStyleInParams
	}
	cfg := &oauth2.Config{
		ClientID: app.ClientID, ClientSecret: app.ClientSecret, RedirectURL: a.callbackURL,
		Endpoint: oauth2.Endpoint{AuthURL: e.AuthorizationURL, TokenURL: e.TokenURL, AuthStyle: style},
	}
	// x/oauth2 joins scopes with spaces; providers with another separator get the joined
	// value as an explicit parameter instead (see AuthCodeURL's caller).
	if p.OAuth2.ScopeSeparator == "" || p.OAuth2.ScopeSeparator == " " {
		cfg.Scopes = scopes
	}
	return cfg
}

// httpContext makes x/oauth2 use a provider client restricted to e's endpoint hosts.
func (a *App) httpContext(ctx context.Context, e catalog.Endpoints) context.Context {
	return context.WithValue(ctx, oauth2.HTTPClient, a.providerClient(e))
}

// providerClient is the client of the service's own calls to a provider (token, revocation
// and test endpoints): through the egress guard, so an endpoint that is — or resolves to — an
// internal address is refused unless allow-listed, only to the hosts of e's token, revocation
// and test URLs (the catalog's templates filled with tenant fields could otherwise name any
// host), and following no redirect: a token or test endpoint that redirects is misbehaving,
// and following it could carry a credential elsewhere.
func (a *App) providerClient(e catalog.Endpoints) *http.Client {
	hosts := make(map[string]bool, 3)
	for _, raw := range []string{e.TokenURL, e.RevocationURL, e.TestURL} {
		if u, err := url.Parse(raw); err == nil && raw != "" {
			hosts[strings.ToLower(u.Scheme+"://"+u.Host)] = true
		}
	}
	c := a.egress.Client(func(*url.URL) bool { return false })
	c.Transport = endpointTransport{guard: a.egress, hosts: hosts, next: c.Transport}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c.Timeout = a.providerTimeout
	return c
}

// endpointTransport sends only to the integration's endpoint hosts, and only URLs the egress
// guard accepts; the guard's dialer checks the resolved address.
type endpointTransport struct {
	guard *egress.Guard
	hosts map[string]bool
	next  http.RoundTripper
}

func (t endpointTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := t.guard.CheckURL(req.URL); err != nil {
		return nil, err
	}
	if !t.hosts[strings.ToLower(req.URL.Scheme+"://"+req.URL.Host)] {
		return nil, fmt.Errorf("%w: %s is not one of the integration's endpoint hosts", egress.ErrRefused, req.URL.Host)
	}
	return t.next.RoundTrip(req)
}

// egressRefused maps a provider call the egress guard refused.
func egressRefused(err error) error {
	return apierr.FailedPrecondition(ReasonEgressRefused,
		"the integration's endpoint is not reachable: it left the integration's hosts or reached an internal address").WithCause(err)
}

// classifyTokenError sorts a failed token request: the credential rejected (only the user can
// fix it) or a transient failure.
func classifyTokenError(err error) error {
	if errors.Is(err, egress.ErrRefused) {
		return egressRefused(err)
	}
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		code := re.ErrorCode
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		switch {
		case code == "invalid_grant", code == "invalid_client", code == "unauthorized_client", code == "access_denied":
			return &providerError{reason: code, rejected: true}
		case code != "":
			return &providerError{reason: code}
		case status == http.StatusUnauthorized:
			return &providerError{reason: "provider answered 401", rejected: true}
		}
		return &providerError{reason: fmt.Sprintf("provider answered %d", status)}
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	return &providerError{reason: "provider unreachable"}
}

// tokenData turns a token response into the credential map to store, keeping prev's refresh
// token when the response omits one (providers that do not rotate), and computes expiries
// with the service's clock.
func tokenData(p *catalog.Provider, tok *oauth2.Token, prev map[string]string, clientID string, now time.Time) (map[string]string, time.Time, time.Time) {
	data := map[string]string{credAccessToken: tok.AccessToken, credTokenType: tok.Type()}
	if clientID != "" {
		data[credClientID] = clientID
	}
	switch {
	case tok.RefreshToken != "":
		data[credRefreshToken] = tok.RefreshToken
	case prev[credRefreshToken] != "":
		data[credRefreshToken] = prev[credRefreshToken]
	}
	var access, refresh time.Time
	// x/oauth2 keeps expires_in on the token for the code and refresh grants; its client
	// credentials source keeps only Expiry (computed with the wall clock) and the raw response.
	secs := tok.ExpiresIn
	if secs <= 0 {
		secs = extraSeconds(tok, "expires_in")
	}
	switch {
	case secs > 0:
		access = now.Add(time.Duration(secs) * time.Second)
	case !tok.Expiry.IsZero():
		access = now.Add(time.Until(tok.Expiry))
	case p.OAuth2 != nil && p.OAuth2.AccessTokenExpires && p.OAuth2.AssumedAccessTokenLifetime > 0:
		access = now.Add(p.OAuth2.AssumedAccessTokenLifetime)
	}
	if v := extraSeconds(tok, "refresh_token_expires_in"); v > 0 {
		refresh = now.Add(time.Duration(v) * time.Second)
	} else if tok.RefreshToken == "" && prev[credRefreshExpiry] != "" {
		refresh, _ = time.Parse(time.RFC3339, prev[credRefreshExpiry])
	}
	if !access.IsZero() {
		data[credExpiry] = access.UTC().Format(time.RFC3339)
	}
	if !refresh.IsZero() {
		data[credRefreshExpiry] = refresh.UTC().Format(time.RFC3339)
	}
	if s, ok := tok.Extra("scope").(string); ok && s != "" {
		data[credScope] = s
	} else if prev[credScope] != "" {
		data[credScope] = prev[credScope]
	}
	return data, access, refresh
}

// extraSeconds reads a numeric field of the token response.
func extraSeconds(tok *oauth2.Token, key string) int64 {
	switch v := tok.Extra(key).(type) {
	case float64:
		return int64(v)
	case string:
		n, _ := strconv.ParseInt(v, 10, 64)
		return n
	}
	return 0
}

// grantedScopes splits a stored scope string by the provider's separator.
func grantedScopes(p *catalog.Provider, data map[string]string, requested []string) []string {
	s := data[credScope]
	if s == "" {
		return requested
	}
	sep := " "
	if p.OAuth2 != nil && p.OAuth2.ScopeSeparator != "" {
		sep = p.OAuth2.ScopeSeparator
	}
	var out []string
	for _, f := range strings.Split(s, sep) {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// parseExpiry reads an RFC 3339 time from a credential map ("" or bad: zero).
func parseExpiry(data map[string]string, key string) time.Time {
	t, err := time.Parse(time.RFC3339, data[key])
	if err != nil {
		return time.Time{}
	}
	return t
}

// testCredential calls the provider's test endpoint with an API key or basic credential.
// errRejected (wrapped) when the provider refuses it.
func (a *App) testCredential(ctx context.Context, p *catalog.Provider, e catalog.Endpoints, data map[string]string) error {
	t := p.API.TestEndpoint
	testURL := e.TestURL
	if t == nil || testURL == "" {
		return nil
	}
	method := t.Method
	if method == "" {
		method = http.MethodGet
	}
	u, err := url.Parse(testURL)
	if err != nil {
		return fmt.Errorf("app: test url: %w", err)
	}
	if p.APIKey != nil && p.APIKey.In == catalog.APIKeyInQuery {
		q := u.Query()
		q.Set(p.APIKey.Name, data[credAPIKey])
		u.RawQuery = q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return fmt.Errorf("app: test request: %w", err)
	}
	for k, v := range p.API.DefaultHeaders {
		req.Header.Set(k, v)
	}
	switch {
	case p.AuthType == catalog.AuthBasic:
		req.SetBasicAuth(data[credUsername], data[credPassword])
	case p.APIKey != nil && p.APIKey.In == catalog.APIKeyInHeader:
		req.Header.Set(p.APIKey.Name, p.APIKey.Prefix+data[credAPIKey])
	case data[credAccessToken] != "":
		req.Header.Set("Authorization", "Bearer "+data[credAccessToken])
	}
	resp, err := a.providerClient(e).Do(req)
	if err != nil {
		switch {
		case errors.Is(err, egress.ErrRefused):
			return egressRefused(stripURL(err))
		case ctx.Err() != nil:
			return ctx.Err()
		}
		return &providerError{reason: "provider unreachable"}
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	want := t.ExpectedStatus
	switch {
	case want != 0 && resp.StatusCode == want, want == 0 && resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode == http.StatusUnauthorized, resp.StatusCode == http.StatusForbidden:
		return &providerError{reason: fmt.Sprintf("provider answered %d", resp.StatusCode), rejected: true}
	}
	return &providerError{reason: fmt.Sprintf("provider answered %d", resp.StatusCode)}
}

// revoke calls a provider's revocation endpoint for the tokens in data.
func (a *App) revoke(ctx context.Context, p *catalog.Provider, e catalog.Endpoints, app OAuthClient, data map[string]string) error {
	revocationURL := e.RevocationURL
	var req *http.Request
	var err error
	switch p.OAuth2.RevocationStyle {
	case catalog.RevocationBearer:
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, revocationURL, nil)
		if err == nil {
			req.Header.Set("Authorization", "Bearer "+data[credAccessToken])
		}
	default: // RFC 7009: revoking the refresh token revokes the grant's access tokens too
		token, hint := data[credRefreshToken], "refresh_token"
		if token == "" {
			token, hint = data[credAccessToken], "access_token"
		}
		form := url.Values{"token": {token}, "token_type_hint": {hint}}
		if p.OAuth2.TokenAuthMethod == catalog.TokenAuthInBody {
			form.Set("client_id", app.ClientID)
			form.Set("client_secret", app.ClientSecret)
		}
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, revocationURL, strings.NewReader(form.Encode()))
		if err == nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if p.OAuth2.TokenAuthMethod != catalog.TokenAuthInBody && app.ClientID != "" {
				req.SetBasicAuth(url.QueryEscape(app.ClientID), url.QueryEscape(app.ClientSecret))
			}
		}
	}
	if err != nil {
		return fmt.Errorf("app: revocation request: %w", err)
	}
	resp, err := a.providerClient(e).Do(req)
	if err != nil {
		if errors.Is(err, egress.ErrRefused) {
			return egressRefused(stripURL(err))
		}
		return &providerError{reason: "provider unreachable"}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	reason := fmt.Sprintf("provider answered %d", resp.StatusCode)
	if code := oauthErrorCode(body); code != "" {
		reason += " " + code
	}
	// RFC 7009 §2.2.1: a 4xx (400 unsupported_token_type or invalid_request, 401
	// invalid_client…) is the provider's final word on this request; asking again cannot
	// change it. 408 and 429 are the exceptions that mean "later".
	permanent := resp.StatusCode >= 400 && resp.StatusCode < 500 &&
		resp.StatusCode != http.StatusRequestTimeout && resp.StatusCode != http.StatusTooManyRequests
	return &providerError{reason: reason, permanent: permanent}
}

// oauthCode is what an OAuth2 error code may look like to be recorded: RFC 6749 limits it to
// printable ASCII without quote or backslash; this is narrower, so nothing a provider echoes
// back (a token, say) can end up in a failure reason.
var oauthCode = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)

// oauthErrorCode returns the "error" member of an OAuth2 JSON error body, or "" when there is
// none that looks like an error code.
func oauthErrorCode(body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || !oauthCode.MatchString(e.Error) {
		return ""
	}
	return e.Error
}

// stripURL drops the URL a *url.Error carries (a test URL may hold an API key in its query),
// keeping the cause.
func stripURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
