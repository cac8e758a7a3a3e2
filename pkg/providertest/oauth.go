package providertest

import (
	"encoding/json"
	"net/http"

	"github.com/ory/fosite"
)

// statusRecorder remembers the status a handler wrote, for the request logs.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) code() int {
	if s.status == 0 {
		return http.StatusOK
	}
	return s.status
}

// clientIDOf reads the client id a request claims, before fosite authenticates it.
func clientIDOf(r *http.Request) string {
	if id, _, ok := r.BasicAuth(); ok {
		return id
	}
	return r.PostForm.Get("client_id")
}

func writeOAuthError(w http.ResponseWriter, status int) {
	code := "invalid_request"
	switch {
	case status == http.StatusBadRequest:
		code = "invalid_grant"
	case status == http.StatusUnauthorized:
		code = "invalid_client"
	case status >= 500:
		code = "server_error"
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": "injected by providertest"})
}

// handleAuthorize approves every valid request at once for the login_hint user (or
// Options.Subject), granting the requested scopes: there is no login page to drive.
func (p *Provider) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	rec := &statusRecorder{ResponseWriter: w}
	entry := AuthorizeRequest{ClientID: r.URL.Query().Get("client_id"), Query: r.URL.Query()}
	defer func() {
		entry.Status = rec.code()
		p.mu.Lock()
		p.events.authorize = append(p.events.authorize, entry)
		p.notifyLocked()
		p.mu.Unlock()
	}()

	ar, err := p.oauth.NewAuthorizeRequest(ctx, r)
	if err != nil {
		p.oauth.WriteAuthorizeError(ctx, rec, ar, err)
		return
	}
	p.mu.Lock()
	deny := p.inject.denyN > 0
	if deny {
		p.inject.denyN--
	}
	p.mu.Unlock()
	if deny {
		p.oauth.WriteAuthorizeError(ctx, rec, ar, fosite.ErrAccessDenied.WithHint("Injected by providertest."))
		return
	}

	subject := r.URL.Query().Get("login_hint")
	if subject == "" {
		subject = p.opts.Subject
	}
	for _, scope := range ar.GetRequestedScopes() {
		ar.GrantScope(scope)
	}
	resp, err := p.oauth.NewAuthorizeResponse(ctx, ar, &fosite.DefaultSession{Subject: subject, Username: subject})
	if err != nil {
		p.oauth.WriteAuthorizeError(ctx, rec, ar, err)
		return
	}
	entry.Subject = subject
	p.oauth.WriteAuthorizeResponse(ctx, rec, ar, resp)
}

func (p *Provider) handleToken(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	// fosite parses the form again; ParseForm is idempotent.
	_ = r.ParseForm()
	rec := &statusRecorder{ResponseWriter: w}
	entry := TokenRequest{GrantType: r.PostForm.Get("grant_type"), ClientID: clientIDOf(r)}

	p.mu.Lock()
	entry.Injected = p.inject.tokenN > 0
	status := p.inject.tokenStatus
	if entry.Injected {
		p.inject.tokenN--
	}
	p.mu.Unlock()
	defer func() {
		entry.Status = rec.code()
		p.mu.Lock()
		p.events.token = append(p.events.token, entry)
		p.notifyLocked()
		p.mu.Unlock()
	}()
	if entry.Injected {
		writeOAuthError(rec, status)
		return
	}

	session := &fosite.DefaultSession{}
	ar, err := p.oauth.NewAccessRequest(ctx, r, session)
	if err != nil {
		p.oauth.WriteAccessError(ctx, rec, ar, err)
		return
	}
	if ar.GetGrantTypes().ExactOne(GrantClientCredentials) {
		// The client acts for itself: its id is the account whose data the API serves.
		session.Subject = ar.GetClient().GetID()
		for _, scope := range ar.GetRequestedScopes() {
			ar.GrantScope(scope)
		}
	}
	resp, err := p.oauth.NewAccessResponse(ctx, ar)
	if err != nil {
		p.oauth.WriteAccessError(ctx, rec, ar, err)
		return
	}
	// ToMap returns the response's own map, so deleting from it edits what is written.
	body := resp.ToMap()
	if p.opts.OmitExpiresIn {
		delete(body, "expires_in")
	}
	if p.opts.OmitRefreshTokenOnRefresh && ar.GetGrantTypes().ExactOne(GrantRefreshToken) {
		delete(body, "refresh_token")
	}
	p.oauth.WriteAccessResponse(ctx, rec, ar, resp)
}

func (p *Provider) handleRevoke(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	_ = r.ParseForm()
	rec := &statusRecorder{ResponseWriter: w}
	entry := Revocation{
		ClientID:      clientIDOf(r),
		Token:         r.PostForm.Get("token"),
		TokenTypeHint: r.PostForm.Get("token_type_hint"),
	}
	p.mu.Lock()
	entry.Injected = p.inject.revokeN > 0
	status := p.inject.revokeStatus
	if entry.Injected {
		p.inject.revokeN--
	}
	p.mu.Unlock()
	defer func() {
		entry.Status = rec.code()
		p.mu.Lock()
		p.events.revocations = append(p.events.revocations, entry)
		p.notifyLocked()
		p.mu.Unlock()
	}()
	if entry.Injected {
		writeOAuthError(rec, status)
		return
	}
	p.oauth.WriteRevocationResponse(ctx, rec, p.oauth.NewRevocationRequest(ctx, r))
}

func (p *Provider) handleIntrospect(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	ir, err := p.oauth.NewIntrospectionRequest(ctx, r, &fosite.DefaultSession{})
	if err != nil {
		p.oauth.WriteIntrospectionError(ctx, w, err)
		return
	}
	p.oauth.WriteIntrospectionResponse(ctx, w, ir)
}
