package app

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/services/connection/internal/catalog"
	"github.com/bulkhead/bulkhead/services/connection/internal/egress"
	"github.com/bulkhead/bulkhead/services/connection/internal/fairness"
	"github.com/bulkhead/bulkhead/services/connection/internal/store"
)

// ReasonEgressRefused is the FAILED_PRECONDITION reason of a proxied call the egress guard
// stopped after the request was accepted: a redirect off the integration's hosts, or a host
// resolving to an internal address.
const ReasonEgressRefused = "EGRESS_REFUSED"

// DefaultProxyMaxResponse bounds a proxied response body (under gRPC's 4 MiB message limit).
const DefaultProxyMaxResponse = 2 << 20

// Param is a query parameter or a header, in order.
type Param struct{ Name, Value string }

// ProxyRequest is a call to make through a connection. The handler has checked the bounds
// (method, sizes); the use case checks the meaning.
type ProxyRequest struct {
	ConnectionID string
	Method       string
	Path         string
	Query        []Param
	Headers      []Param
	Body         []byte
	BaseURLIndex int
}

// ProxyResponse is the provider's answer, filtered.
type ProxyResponse struct {
	Status    int
	Headers   []Param
	Body      []byte
	Truncated bool
}

// Proxy calls the provider through a connection the caller may use, with the credential
// injected as the catalog says. It takes the credential as GetAccessToken does (same use
// view, same refresh), but never hands it out, so users' tokens need no service hop.
//
// Order matters: the request is checked (and refused with INVALID_ARGUMENT) before the
// connection is read, and the (tenant, integration) rate limit is taken after the row read
// — so another tenant's connection id costs its owner nothing and answers NOT_FOUND.
func (a *App) Proxy(ctx context.Context, req ProxyRequest) (ProxyResponse, error) {
	c, err := caller(ctx)
	if err != nil {
		return ProxyResponse{}, err
	}
	if err := checkProxyPath(req.Path); err != nil {
		return ProxyResponse{}, err
	}
	tok, conn, err := a.credentialFor(ctx, c, TokenRequest{ConnectionID: req.ConnectionID})
	if err != nil {
		return ProxyResponse{}, err
	}
	p, ok := a.catalog.Get(conn.Integration)
	if !ok {
		return ProxyResponse{}, fmt.Errorf("app: integration %q left the catalog", conn.Integration)
	}
	e, err := p.Resolve(conn.Fields)
	if err != nil {
		return ProxyResponse{}, fmt.Errorf("app: resolve %s: %w", p.Key, err)
	}
	target, err := a.proxyURL(p, e, req)
	if err != nil {
		return ProxyResponse{}, err
	}
	header, err := proxyHeaders(p, req.Headers)
	if err != nil {
		return ProxyResponse{}, err
	}
	if ok, retry := a.fairness.Allow(conn.TenantID, conn.Integration); !ok {
		return ProxyResponse{}, apierr.RateLimited(retry)
	}

	var out ProxyResponse
	err = a.fairness.Do(conn.TenantID, conn.Integration, func() error {
		var err error
		out, err = a.send(ctx, p, e, target, header, req, tok)
		if err != nil || out.Status != http.StatusUnauthorized {
			return err
		}
		// The provider refused the credential: one forced refresh (shared with every other
		// caller who saw this version fail), then one retry.
		fresh, _, err := a.credentialFor(ctx, c, TokenRequest{
			ConnectionID: req.ConnectionID, ForceRefresh: true, RejectedVersion: tok.CredentialVersion,
		})
		if err != nil {
			return err
		}
		out, err = a.send(ctx, p, e, target, header, req, fresh)
		return err
	})
	var failed failedAnswer
	switch {
	case err == nil:
		return out, nil
	case errors.As(err, &failed):
		return failed.resp, nil
	case errors.Is(err, fairness.ErrOpen):
		return ProxyResponse{}, apierr.Unavailable("provider", a.fairness.RetryAfter()).WithCause(err)
	case errors.Is(err, egress.ErrRefused):
		a.log.WarnContext(ctx, "proxy call refused by the egress guard", "connection_id", conn.ID,
			"integration", conn.Integration, "error", err.Error())
		return ProxyResponse{}, apierr.FailedPrecondition(ReasonEgressRefused,
			"the call left the integration's hosts or reached an internal address").WithCause(err)
	}
	var ae *apierr.Error
	if errors.As(err, &ae) || ctx.Err() != nil {
		return ProxyResponse{}, err
	}
	return ProxyResponse{}, unavailable(err)
}

// send makes one call with tok injected. Provider failures (5xx, network) come back marked
// fairness.Failure, with the response (if any) in the result.
func (a *App) send(ctx context.Context, p *catalog.Provider, e catalog.Endpoints, target *url.URL, header http.Header, req ProxyRequest, tok AccessToken) (ProxyResponse, error) {
	u := *target
	h := header.Clone()
	for k, v := range p.API.DefaultHeaders {
		h.Set(k, v)
	}
	switch {
	case tok.AuthType == store.AuthBasic:
		h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(tok.Username+":"+tok.Token)))
	case tok.AuthType == store.AuthAPIKey && p.APIKey != nil && p.APIKey.In == catalog.APIKeyInQuery:
		q := u.Query()
		q.Set(p.APIKey.Name, tok.Token)
		u.RawQuery = q.Encode()
	case tok.AuthType == store.AuthAPIKey && p.APIKey != nil:
		h.Set(p.APIKey.Name, p.APIKey.Prefix+tok.Token)
	default:
		typ := tok.TokenType
		if strings.EqualFold(typ, "bearer") || typ == "" {
			typ = "Bearer"
		}
		h.Set("Authorization", typ+" "+tok.Token)
	}
	var body io.Reader
	if len(req.Body) > 0 {
		body = bytes.NewReader(req.Body)
	}
	r, err := http.NewRequestWithContext(ctx, req.Method, u.String(), body)
	if err != nil {
		return ProxyResponse{}, fmt.Errorf("app: proxy request: %w", err)
	}
	r.Header = h
	resp, err := a.egress.Client(e.AllowsURL).Do(r)
	if err != nil {
		// url.Error carries the URL, which may hold a query API key: keep only the cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		switch {
		case errors.Is(err, egress.ErrRefused):
			return ProxyResponse{}, err
		case ctx.Err() != nil:
			return ProxyResponse{}, ctx.Err()
		}
		return ProxyResponse{}, fairness.Failure(fmt.Errorf("provider unreachable: %w", err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, int64(a.maxProxyRes)+1))
	if err != nil && ctx.Err() == nil {
		return ProxyResponse{}, fairness.Failure(errors.New("provider response cut short"))
	}
	out := ProxyResponse{Status: resp.StatusCode, Headers: responseHeaders(resp.Header), Body: b}
	if len(b) > a.maxProxyRes {
		out.Body, out.Truncated = b[:a.maxProxyRes], true
	}
	if resp.StatusCode >= 500 || resp.StatusCode == http.StatusRequestTimeout {
		// The answer still goes to the caller; the breaker counts it.
		return out, failedAnswer{out}
	}
	return out, nil
}

// failedAnswer is a provider 5xx: a failure for the breaker, an answer for the caller.
type failedAnswer struct{ resp ProxyResponse }

func (f failedAnswer) Error() string { return fmt.Sprintf("provider answered %d", f.resp.Status) }

func (f failedAnswer) Unwrap() error { return fairness.Failure(errors.New("provider 5xx")) }

// proxyURL joins the base URL and the path, adds the query, and checks the result against the
// integration's hosts and the egress guard.
func (a *App) proxyURL(p *catalog.Provider, e catalog.Endpoints, req ProxyRequest) (*url.URL, error) {
	if req.BaseURLIndex < 0 || req.BaseURLIndex >= len(e.BaseURLs) {
		return nil, apierr.InvalidArgument("base_url_index", "the integration has %d base URLs", len(e.BaseURLs))
	}
	base, err := url.Parse(e.BaseURLs[req.BaseURLIndex])
	if err != nil {
		return nil, fmt.Errorf("app: base URL of %s: %w", p.Key, err)
	}
	u, err := url.Parse(strings.TrimSuffix(e.BaseURLs[req.BaseURLIndex], "/") + req.Path)
	// The path was checked character by character; refuse anything that still changed the
	// origin or carries a query or fragment of its own.
	if err != nil || u.Scheme != base.Scheme || u.Host != base.Host || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, apierr.InvalidArgument("path", "the path must stay below the integration's base URL")
	}
	q := url.Values{}
	for _, prm := range req.Query {
		if p.APIKey != nil && p.APIKey.In == catalog.APIKeyInQuery && strings.EqualFold(prm.Name, p.APIKey.Name) {
			return nil, apierr.InvalidArgument("query", "the credential's parameter is set by the service")
		}
		q.Add(prm.Name, prm.Value)
	}
	u.RawQuery = q.Encode()
	if !e.AllowsURL(u) {
		return nil, apierr.InvalidArgument("path", "the URL is not on the integration's hosts")
	}
	if err := a.egress.CheckURL(u); err != nil {
		return nil, apierr.InvalidArgument("path", "the URL is not allowed").WithCause(err)
	}
	return u, nil
}

// checkProxyPath accepts a path made of RFC 3986 path characters that starts with exactly one
// "/" and has no user info marker, backslash, query, fragment, dot segment or encoded slash,
// dot or backslash: nothing a server or an intermediary could read as another origin or
// another directory than the one written.
func checkProxyPath(path string) error {
	bad := apierr.InvalidArgument("path", "path must be an absolute path below the base URL without dot segments, '@', '\\', '?' or '#'")
	if !strings.HasPrefix(path, "/") || strings.HasPrefix(path, "//") {
		return bad
	}
	for i := 0; i < len(path); i++ {
		ch := path[i]
		switch {
		case 'a' <= ch && ch <= 'z', 'A' <= ch && ch <= 'Z', '0' <= ch && ch <= '9':
		case strings.IndexByte("/-._~!$&'()*+,;=:%", ch) >= 0:
		default:
			return bad
		}
	}
	lower := strings.ToLower(path)
	for _, enc := range []string{"%2f", "%5c", "%2e", "%40", "%00"} {
		if strings.Contains(lower, enc) {
			return bad
		}
	}
	if _, err := url.PathUnescape(path); err != nil {
		return bad
	}
	for _, seg := range strings.Split(path, "/")[1:] {
		if seg == "." || seg == ".." {
			return bad
		}
	}
	return nil
}

// allowedRequestHeaders may be set by callers, besides X-* and *-Version names.
var allowedRequestHeaders = map[string]bool{
	"Accept": true, "Accept-Language": true, "Content-Type": true, "Content-Language": true,
	"If-Match": true, "If-None-Match": true, "If-Modified-Since": true, "If-Unmodified-Since": true,
	"Idempotency-Key": true, "Prefer": true,
}

// proxyHeaders checks the caller's headers against the allow-list. Anything that carries a
// credential, names another host or steers an intermediary (Authorization, Cookie, Host,
// Proxy-*, Forwarded, X-Forwarded-*) is refused rather than dropped, so the caller learns.
func proxyHeaders(p *catalog.Provider, in []Param) (http.Header, error) {
	h := make(http.Header, len(in))
	for _, prm := range in {
		name := http.CanonicalHeaderKey(prm.Name)
		ok := allowedRequestHeaders[name] || strings.HasSuffix(name, "-Version") ||
			(strings.HasPrefix(name, "X-") && !strings.HasPrefix(name, "X-Forwarded-") &&
				!strings.HasPrefix(name, "X-Bulkhead-") && name != "X-Real-Ip")
		if p.APIKey != nil && p.APIKey.In == catalog.APIKeyInHeader && strings.EqualFold(name, p.APIKey.Name) {
			ok = false
		}
		if !ok || strings.ContainsAny(prm.Name, " :\r\n") || strings.ContainsAny(prm.Value, "\r\n\x00") {
			return nil, apierr.InvalidArgument("headers", "header %q may not be set through the proxy", name)
		}
		h.Add(name, prm.Value)
	}
	return h, nil
}

// droppedResponseHeaders never reach the caller: cookies belong to the service's session with
// the provider (it keeps none), hop-by-hop headers to this hop.
var droppedResponseHeaders = map[string]bool{
	"Set-Cookie": true, "Set-Cookie2": true, "Connection": true, "Keep-Alive": true,
	"Proxy-Authenticate": true, "Proxy-Authorization": true, "Proxy-Connection": true, "Te": true,
	"Trailer": true, "Transfer-Encoding": true, "Upgrade": true, "Content-Length": true,
}

func responseHeaders(h http.Header) []Param {
	// Headers the response's Connection header names are hop-by-hop too (RFC 9110 §7.6.1).
	hop := map[string]bool{}
	for _, v := range h.Values("Connection") {
		for _, f := range strings.Split(v, ",") {
			hop[http.CanonicalHeaderKey(strings.TrimSpace(f))] = true
		}
	}
	var out []Param
	for name, values := range h {
		if droppedResponseHeaders[name] || hop[name] {
			continue
		}
		for _, v := range values {
			out = append(out, Param{Name: name, Value: v})
		}
	}
	slices.SortStableFunc(out, func(a, b Param) int { return strings.Compare(a.Name, b.Name) })
	return out
}
