package providertest

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/ory/fosite"
)

// Credential kinds reported by /api/me.
const (
	KindOAuth2 = "oauth2"
	KindAPIKey = "api_key"
	KindBasic  = "basic"
)

// credential is who an API request acts as.
type credential struct {
	account  string
	clientID string
	scopes   []string
	kind     string
}

// window is a fixed rate-limit window of one account.
type window struct {
	start time.Time
	count int
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeAPIError(w http.ResponseWriter, status int, code string) {
	writeJSON(w, status, map[string]string{"error": code})
}

// api wraps an API handler with authentication, logging, rate limiting and injected failures.
func (p *Provider) api(h func(http.ResponseWriter, *http.Request, credential)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w}
		entry := APIRequest{Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery}
		defer func() {
			entry.Status = rec.code()
			p.mu.Lock()
			p.events.api = append(p.events.api, entry)
			p.notifyLocked()
			p.mu.Unlock()
		}()

		cred, ok := p.authenticate(r)
		if !ok {
			rec.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			writeAPIError(rec, http.StatusUnauthorized, "invalid_token")
			return
		}
		entry.Account, entry.ClientID = cred.account, cred.clientID
		if !p.admit(rec, cred.account) {
			return
		}
		h(rec, r, cred)
	})
}

// authenticate accepts, in this order: an Authorization header (Bearer API key, Bearer OAuth2
// access token checked by fosite, or Basic), an X-Api-Key header, an api_key query parameter. A
// credential that is present but wrong is refused rather than skipped.
func (p *Provider) authenticate(r *http.Request) (credential, bool) {
	if r.Header.Get("Authorization") != "" {
		if token, ok := bearerToken(r); ok {
			if account, ok := p.lookupAPIKey(token); ok {
				return credential{account: account, kind: KindAPIKey}, true
			}
			use, ar, err := p.oauth.IntrospectToken(r.Context(), token, fosite.AccessToken, &fosite.DefaultSession{})
			// fosite also introspects refresh tokens; a refresh token is not an API credential.
			if err != nil || use != fosite.AccessToken {
				return credential{}, false
			}
			return credential{
				account:  ar.GetSession().GetSubject(),
				clientID: ar.GetClient().GetID(),
				scopes:   ar.GetGrantedScopes(),
				kind:     KindOAuth2,
			}, true
		}
		if user, pass, ok := r.BasicAuth(); ok {
			p.mu.Lock()
			c, found := p.basic[user]
			p.mu.Unlock()
			if found && subtle.ConstantTimeCompare([]byte(c.password), []byte(pass)) == 1 {
				return credential{account: c.account, kind: KindBasic}, true
			}
		}
		return credential{}, false
	}
	key := r.Header.Get("X-Api-Key")
	if key == "" {
		key = r.URL.Query().Get("api_key")
	}
	if key == "" {
		return credential{}, false
	}
	account, ok := p.lookupAPIKey(key)
	return credential{account: account, kind: KindAPIKey}, ok
}

func (p *Provider) lookupAPIKey(key string) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	account, ok := p.apiKeys[key]
	return account, ok
}

// admit applies, in order: queued throttles, the rate limit, queued failures, scheduled failures.
// It writes the refusal and returns false when the request must not reach the handler.
func (p *Provider) admit(w http.ResponseWriter, account string) bool {
	api := p.opts.API
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen[account]++
	seen := p.seen[account]

	if in, ok := takeLocked(p.inject.throttle, account); ok {
		w.Header().Set("Retry-After", retryAfterSeconds(in.retry))
		writeAPIError(w, http.StatusTooManyRequests, "rate_limited")
		return false
	}
	if api.RateLimit > 0 {
		win := p.limits[account]
		if win == nil || !now.Before(win.start.Add(api.RateLimitWindow)) {
			win = &window{start: now}
			p.limits[account] = win
		}
		win.count++
		reset := win.start.Add(api.RateLimitWindow)
		h := w.Header()
		h.Set("X-RateLimit-Limit", strconv.Itoa(api.RateLimit))
		h.Set("X-RateLimit-Remaining", strconv.Itoa(max(0, api.RateLimit-win.count)))
		h.Set("X-RateLimit-Reset", strconv.FormatInt(reset.Add(time.Second-1).Unix(), 10))
		if win.count > api.RateLimit {
			h.Set("Retry-After", retryAfterSeconds(max(time.Second, reset.Sub(now))))
			writeAPIError(w, http.StatusTooManyRequests, "rate_limited")
			return false
		}
	}
	if in, ok := takeLocked(p.inject.fail, account); ok {
		writeAPIError(w, in.status, "injected_failure")
		return false
	}
	if api.FailEvery > 0 && seen%api.FailEvery == 0 {
		writeAPIError(w, api.FailStatus, "injected_failure")
		return false
	}
	return true
}

// retryAfterSeconds renders d as delta-seconds, rounded up.
func retryAfterSeconds(d time.Duration) string {
	return strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10)
}

func (p *Provider) handleMe(w http.ResponseWriter, _ *http.Request, c credential) {
	writeJSON(w, http.StatusOK, map[string]any{
		"account":   c.account,
		"client_id": c.clientID,
		"scopes":    c.scopes,
		"auth":      c.kind,
	})
}

// listParams reads cursor, updated_since (RFC 3339, inclusive) and limit.
func (p *Provider) listParams(q url.Values) (since time.Time, c *cursor, limit int, errCode string) {
	limit = p.opts.API.DefaultPageSize
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return since, nil, 0, "invalid_limit"
		}
		limit = min(n, p.opts.API.MaxPageSize)
	}
	if s := q.Get("updated_since"); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return since, nil, 0, "invalid_updated_since"
		}
		since = t
	}
	if s := q.Get("cursor"); s != "" {
		dc, err := decodeCursor(s)
		if err != nil {
			return since, nil, 0, "invalid_cursor"
		}
		c = &dc
	}
	return since, c, limit, ""
}

// recordsPage is the body of PathRecords.
type recordsPage struct {
	Records    []Record `json:"records"`
	NextCursor string   `json:"next_cursor,omitempty"`
}

func (p *Provider) handleRecords(w http.ResponseWriter, r *http.Request, c credential) {
	since, cur, limit, code := p.listParams(r.URL.Query())
	if code != "" {
		writeAPIError(w, http.StatusBadRequest, code)
		return
	}
	p.mu.Lock()
	page, next := p.pageLocked(c.account, since, cur, limit)
	p.mu.Unlock()
	body := recordsPage{Records: page}
	if next != nil {
		body.NextCursor = next.encode()
	}
	writeJSON(w, http.StatusOK, body)
}

func (p *Provider) handleRecordsLinked(w http.ResponseWriter, r *http.Request, c credential) {
	q := r.URL.Query()
	since, cur, limit, code := p.listParams(q)
	if code != "" {
		writeAPIError(w, http.StatusBadRequest, code)
		return
	}
	p.mu.Lock()
	page, next := p.pageLocked(c.account, since, cur, limit)
	p.mu.Unlock()
	if next != nil {
		q.Set("cursor", next.encode())
		q.Set("limit", strconv.Itoa(limit))
		w.Header().Set("Link", "<"+p.URL+PathRecordsLinked+"?"+q.Encode()+`>; rel="next"`)
	}
	writeJSON(w, http.StatusOK, page)
}

func (p *Provider) handleRedirect(w http.ResponseWriter, r *http.Request, _ credential) {
	p.mu.Lock()
	target := p.redirect
	p.mu.Unlock()
	http.Redirect(w, r, target, http.StatusFound)
}
