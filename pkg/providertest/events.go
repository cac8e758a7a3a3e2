package providertest

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"time"
)

// TokenRequest is one request that reached the token endpoint.
type TokenRequest struct {
	GrantType string
	// ClientID as sent (HTTP Basic user or client_id form value), before authentication.
	ClientID string
	Status   int
	// Injected is true when the answer was a failure queued by FailNextTokenRequests.
	Injected bool
}

// Revocation is one request that reached the revocation endpoint.
type Revocation struct {
	ClientID      string
	Token         string
	TokenTypeHint string
	Status        int
	Injected      bool
}

// AuthorizeRequest is one request that reached the authorization endpoint.
type AuthorizeRequest struct {
	ClientID string
	// Subject is the user approved; empty when the request was refused.
	Subject string
	Query   url.Values
	Status  int
}

// APIRequest is one request that reached the provider API.
type APIRequest struct {
	Method   string
	Path     string
	RawQuery string
	// Account and ClientID identify the credential; both empty when it was refused.
	Account  string
	ClientID string
	Status   int
}

// InternalRequest is one request that reached the internal server.
type InternalRequest struct {
	Method        string
	Path          string
	Authorization string
}

type events struct {
	token       []TokenRequest
	revocations []Revocation
	authorize   []AuthorizeRequest
	api         []APIRequest
	internal    []InternalRequest
}

type apiInjection struct {
	n      int
	status int
	retry  time.Duration
}

type injections struct {
	tokenN, tokenStatus   int
	revokeN, revokeStatus int
	denyN                 int
	// Keyed by account; "" matches any account.
	throttle map[string]*apiInjection
	fail     map[string]*apiInjection
}

func mustErrorStatus(status int) {
	if status < 400 || status > 599 {
		panic(fmt.Sprintf("providertest: injected status %d is not a 4xx or 5xx", status))
	}
}

// FailNextTokenRequests makes the next n token requests (any grant type) fail with status: 400
// answers invalid_grant, 401 invalid_client, other 4xx invalid_request, 5xx server_error. The
// requests are still counted. It panics on a status outside 400–599.
func (p *Provider) FailNextTokenRequests(n, status int) {
	mustErrorStatus(status)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inject.tokenN, p.inject.tokenStatus = n, status
}

// FailNextRevocations makes the next n revocation requests fail with status (400 invalid_request,
// 5xx server_error), without revoking anything.
func (p *Provider) FailNextRevocations(n, status int) {
	mustErrorStatus(status)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inject.revokeN, p.inject.revokeStatus = n, status
}

// DenyNextAuthorizations makes the next n authorization requests redirect back with
// error=access_denied, as when the user refuses consent.
func (p *Provider) DenyNextAuthorizations(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inject.denyN = n
}

// ThrottleNextAPIRequests makes the next n authenticated API requests of account ("" for any
// account) answer 429 with Retry-After: retryAfter rounded up to whole seconds.
func (p *Provider) ThrottleNextAPIRequests(account string, n int, retryAfter time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inject.throttle == nil {
		p.inject.throttle = make(map[string]*apiInjection)
	}
	p.inject.throttle[account] = &apiInjection{n: n, status: http.StatusTooManyRequests, retry: retryAfter}
}

// FailNextAPIRequests makes the next n authenticated API requests of account ("" for any
// account) answer status.
func (p *Provider) FailNextAPIRequests(account string, n, status int) {
	mustErrorStatus(status)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inject.fail == nil {
		p.inject.fail = make(map[string]*apiInjection)
	}
	p.inject.fail[account] = &apiInjection{n: n, status: status}
}

// takeLocked consumes one injection for account (its own first, then the any-account one).
func takeLocked(m map[string]*apiInjection, account string) (apiInjection, bool) {
	for _, key := range []string{account, ""} {
		if in, ok := m[key]; ok && in.n > 0 {
			in.n--
			return *in, true
		}
	}
	return apiInjection{}, false
}

// TokenRequests counts requests of grantType that reached the token endpoint, whatever their
// outcome (GrantRefreshToken for "how many refreshes reached the provider").
func (p *Provider) TokenRequests(grantType string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, t := range p.events.token {
		if t.GrantType == grantType {
			n++
		}
	}
	return n
}

// TokenRequestLog returns every token request so far, oldest first.
func (p *Provider) TokenRequestLog() []TokenRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.events.token)
}

// Revocations returns every revocation request so far, oldest first.
func (p *Provider) Revocations() []Revocation {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.events.revocations)
}

// Authorizations returns every authorization request so far, oldest first.
func (p *Provider) Authorizations() []AuthorizeRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.events.authorize)
}

// APIRequests returns every API request so far, oldest first.
func (p *Provider) APIRequests() []APIRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.events.api)
}

// InternalRequests returns every request the internal server received; SSRF tests expect none.
func (p *Provider) InternalRequests() []InternalRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.events.internal)
}
