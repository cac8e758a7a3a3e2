package catalog

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
)

// ValidationError is one problem of one catalog entry. Provider is the entry's key (or "#i",
// its position, when the key itself is missing); Field is the YAML path of the setting, e.g.
// "oauth2.token_url" or "connection_fields[0].pattern".
type ValidationError struct {
	Provider string
	Field    string
	Problem  string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("catalog: provider %q: %s: %s", e.Provider, e.Field, e.Problem)
}

var (
	keyRE       = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9-]{0,62})$`)
	fieldNameRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)
	headerRE    = regexp.MustCompile(`^[A-Za-z0-9-]+$`)
	queryNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
)

// reservedAuthParams are set by the authorization flow itself; a catalog entry overriding one
// could, for example, redirect the code elsewhere or drop PKCE.
var reservedAuthParams = map[string]bool{
	"client_id": true, "redirect_uri": true, "response_type": true, "state": true, "scope": true,
	"code_challenge": true, "code_challenge_method": true,
}

// credentialHeaders may never be set by default_headers: credentials are injected by the service.
var credentialHeaders = map[string]bool{
	"Authorization": true, "Proxy-Authorization": true, "Cookie": true, "Host": true,
}

// checker collects the problems of one provider.
type checker struct {
	provider string
	errs     []error
}

func (c *checker) add(field, format string, args ...any) {
	c.errs = append(c.errs, &ValidationError{Provider: c.provider, Field: field, Problem: fmt.Sprintf(format, args...)})
}

// validate checks p and, when it is valid, compiles its patterns.
func validate(p *Provider, name string, opts options) []error {
	c := &checker{provider: name}
	if !keyRE.MatchString(p.Key) {
		c.add("key", "%q is not lower-case letters, digits and dashes (at most 63, starting alphanumeric)", p.Key)
	}
	if strings.TrimSpace(p.DisplayName) == "" {
		c.add("display_name", "missing")
	}
	switch p.DefaultConnectionScope {
	case ScopeOrg, ScopeUser:
	default:
		c.add("default_connection_scope", "%q is not org or user", p.DefaultConnectionScope)
	}

	patterns, templatable := checkFields(c, p.Fields)
	checkAuth(c, p, templatable, opts)
	checkAPI(c, p, templatable, opts)

	if len(c.errs) > 0 {
		return c.errs
	}
	p.patterns = patterns
	return nil
}

// checkFields validates field declarations; it returns the compiled patterns and the set of
// fields a template may reference: those that always have a value (required, or defaulted).
func checkFields(c *checker, fields []Field) (map[string]*regexp.Regexp, map[string]bool) {
	patterns := make(map[string]*regexp.Regexp, len(fields))
	templatable := make(map[string]bool, len(fields))
	for i, f := range fields {
		at := fmt.Sprintf("connection_fields[%d]", i)
		if !fieldNameRE.MatchString(f.Name) {
			c.add(at+".name", "%q is not lower-case letters, digits and underscores", f.Name)
			continue
		}
		if _, dup := patterns[f.Name]; dup {
			c.add(at+".name", "duplicate field %q", f.Name)
			continue
		}
		if !strings.HasPrefix(f.Pattern, "^") || !strings.HasSuffix(f.Pattern, "$") {
			// An unanchored pattern matches "evil.com/x" as soon as it contains one good character.
			c.add(at+".pattern", "must be anchored with ^ and $")
			patterns[f.Name] = nil
			continue
		}
		re, err := regexp.Compile(f.Pattern)
		if err != nil {
			c.add(at+".pattern", "does not compile: %v", err)
			patterns[f.Name] = nil
			continue
		}
		patterns[f.Name] = re
		if f.Default != "" {
			if err := checkValue(re, f.Default); err != "" {
				c.add(at+".default", "%s", err)
			}
		}
		templatable[f.Name] = f.Required || f.Default != ""
	}
	return patterns, templatable
}

// checkValue returns why value is not acceptable for a field, or "".
func checkValue(re *regexp.Regexp, value string) string {
	if !safeValue(value) {
		return "contains characters outside A-Z a-z 0-9 . _ ~ -, or a leading, trailing or double dot"
	}
	if !re.MatchString(value) {
		return "does not match the pattern"
	}
	return ""
}

// safeValue limits every field value to RFC 3986 unreserved characters without dot tricks, so a
// rendered URL keeps the host and path structure of its template whatever the pattern allows.
func safeValue(v string) bool {
	if v == "" || strings.HasPrefix(v, ".") || strings.HasSuffix(v, ".") || strings.Contains(v, "..") {
		return false
	}
	for _, r := range v {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '~', r == '-':
		default:
			return false
		}
	}
	return true
}

func checkAuth(c *checker, p *Provider, templatable map[string]bool, opts options) {
	switch p.AuthType {
	case AuthOAuth2AuthorizationCode, AuthOAuth2ClientCredentials:
		if p.APIKey != nil {
			c.add("api_key", "set for auth type %s", p.AuthType)
		}
		if p.OAuth2 == nil {
			c.add("oauth2", "missing for auth type %s", p.AuthType)
			return
		}
		checkOAuth2(c, p.AuthType, p.OAuth2, templatable, opts)
	case AuthAPIKey:
		if p.OAuth2 != nil {
			c.add("oauth2", "set for auth type api_key")
		}
		if p.APIKey == nil {
			c.add("api_key", "missing for auth type api_key")
			return
		}
		switch p.APIKey.In {
		case APIKeyInHeader:
			if !headerRE.MatchString(p.APIKey.Name) {
				c.add("api_key.name", "%q is not a header name", p.APIKey.Name)
			}
		case APIKeyInQuery:
			if !queryNameRE.MatchString(p.APIKey.Name) {
				c.add("api_key.name", "%q is not a query parameter name", p.APIKey.Name)
			}
			if p.APIKey.Prefix != "" {
				c.add("api_key.prefix", "only meaningful in a header")
			}
		default:
			c.add("api_key.in", "%q is not header or query", p.APIKey.In)
		}
		if strings.ContainsAny(p.APIKey.Prefix, "\r\n") {
			c.add("api_key.prefix", "contains a line break")
		}
	case AuthBasic:
		if p.OAuth2 != nil {
			c.add("oauth2", "set for auth type basic")
		}
		if p.APIKey != nil {
			c.add("api_key", "set for auth type basic")
		}
	default:
		c.add("auth_type", "%q is not one of oauth2_authorization_code, oauth2_client_credentials, api_key, basic", p.AuthType)
	}
}

func checkOAuth2(c *checker, t AuthType, o *OAuth2, templatable map[string]bool, opts options) {
	if t == AuthOAuth2AuthorizationCode {
		if o.AuthorizationURL == "" {
			c.add("oauth2.authorization_url", "missing")
		} else {
			checkURLTemplate(c, "oauth2.authorization_url", o.AuthorizationURL, templatable, opts)
		}
	} else {
		if o.AuthorizationURL != "" {
			c.add("oauth2.authorization_url", "set for client credentials, which has no authorization step")
		}
		if len(o.AuthorizationParams) > 0 {
			c.add("oauth2.authorization_params", "set for client credentials, which has no authorization step")
		}
	}
	if o.TokenURL == "" {
		c.add("oauth2.token_url", "missing")
	} else {
		checkURLTemplate(c, "oauth2.token_url", o.TokenURL, templatable, opts)
	}
	switch {
	case o.RevocationURL == "" && o.RevocationStyle != "":
		c.add("oauth2.revocation_style", "set without revocation_url")
	case o.RevocationURL != "":
		checkURLTemplate(c, "oauth2.revocation_url", o.RevocationURL, templatable, opts)
		switch o.RevocationStyle {
		case RevocationRFC7009, RevocationBearer:
		default:
			c.add("oauth2.revocation_style", "%q is not rfc7009 or bearer", o.RevocationStyle)
		}
	}
	switch o.TokenAuthMethod {
	case TokenAuthAuto, TokenAuthBasic, TokenAuthInBody:
	default:
		c.add("oauth2.token_auth_method", "%q is not client_secret_basic or client_secret_post", o.TokenAuthMethod)
	}
	sep := o.ScopeSeparator
	switch sep {
	case "":
		sep = " "
	case " ", ",":
	default:
		c.add("oauth2.scope_separator", "%q is not a space or a comma", o.ScopeSeparator)
	}
	for i, s := range o.DefaultScopes {
		if s == "" || strings.Contains(s, sep) || strings.ContainsAny(s, " \t\r\n\"\\") {
			c.add(fmt.Sprintf("oauth2.default_scopes[%d]", i), "%q is empty or contains the separator, whitespace, a quote or a backslash", s)
		}
	}
	if o.AssumedAccessTokenLifetime < 0 {
		c.add("oauth2.assumed_access_token_lifetime", "negative")
	}
	if o.AssumedAccessTokenLifetime > 0 && !o.AccessTokenExpires {
		c.add("oauth2.assumed_access_token_lifetime", "set although access tokens do not expire")
	}
	if o.RefreshTokenLifetime < 0 {
		c.add("oauth2.refresh_token_lifetime", "negative")
	}
	if o.RefreshTokenLifetime > 0 && t != AuthOAuth2AuthorizationCode {
		c.add("oauth2.refresh_token_lifetime", "set for client credentials, which has no refresh tokens")
	}
	for k, v := range o.AuthorizationParams {
		if reservedAuthParams[k] || !queryNameRE.MatchString(k) {
			c.add("oauth2.authorization_params."+k, "reserved or not a parameter name")
		}
		if strings.ContainsAny(v, "\r\n") {
			c.add("oauth2.authorization_params."+k, "value contains a line break")
		}
	}
}

func checkAPI(c *checker, p *Provider, templatable map[string]bool, opts options) {
	a := p.API
	if len(a.BaseURLs) == 0 {
		c.add("api.base_urls", "missing")
	}
	scheme := ""
	for i, u := range a.BaseURLs {
		at := fmt.Sprintf("api.base_urls[%d]", i)
		parsed := checkURLTemplate(c, at, u, templatable, opts)
		if parsed == nil {
			continue
		}
		if scheme == "" {
			scheme = parsed.Scheme
		} else if parsed.Scheme != scheme {
			c.add(at, "scheme %s differs from the first base URL's %s", parsed.Scheme, scheme)
		}
	}
	for i, h := range a.AllowedHosts {
		checkHostTemplate(c, fmt.Sprintf("api.allowed_hosts[%d]", i), h, templatable, opts)
	}
	for name, v := range a.DefaultHeaders {
		at := "api.default_headers." + name
		canon := http.CanonicalHeaderKey(name)
		switch {
		case !headerRE.MatchString(name):
			c.add(at, "not a header name")
		case credentialHeaders[canon]:
			c.add(at, "may not be set: credentials are injected by the service")
		case p.APIKey != nil && p.APIKey.In == APIKeyInHeader && strings.EqualFold(p.APIKey.Name, name):
			c.add(at, "is the API key header")
		}
		if strings.ContainsAny(v, "\r\n") {
			c.add(at, "value contains a line break")
		}
	}
	if t := a.TestEndpoint; t != nil {
		switch t.Method {
		case http.MethodGet, http.MethodHead, http.MethodPost:
		default:
			c.add("api.test_endpoint.method", "%q is not GET, HEAD or POST", t.Method)
		}
		if !strings.HasPrefix(t.Path, "/") || strings.HasPrefix(t.Path, "//") || strings.Contains(t.Path, "..") ||
			strings.ContainsAny(t.Path, "?#@\\ \r\n") {
			c.add("api.test_endpoint.path", "%q is not an absolute path without query, dot segments or authority", t.Path)
		} else if err := checkPlaceholders(t.Path, templatable); err != "" {
			c.add("api.test_endpoint.path", "%s", err)
		}
		if t.ExpectedStatus < 100 || t.ExpectedStatus > 599 {
			c.add("api.test_endpoint.expected_status", "%d is not an HTTP status", t.ExpectedStatus)
		}
	}
}

// checkPlaceholders returns why tmpl's placeholders are unusable, or "".
func checkPlaceholders(tmpl string, templatable map[string]bool) string {
	names, err := placeholders(tmpl)
	if err != nil {
		return err.Error()
	}
	for _, n := range names {
		has, declared := templatable[n]
		switch {
		case !declared:
			return fmt.Sprintf("references undeclared field {%s}", n)
		case !has:
			return fmt.Sprintf("references {%s}, which is neither required nor defaulted", n)
		}
	}
	return ""
}

// sample stands in for every field when checking a template's shape: field values can only add
// unreserved characters, so the structure seen with it is the structure every value gets.
const sample = "x"

// checkURLTemplate validates an endpoint URL template and returns it rendered with sample
// values, or nil when it is unusable.
func checkURLTemplate(c *checker, at, tmpl string, templatable map[string]bool, opts options) *url.URL {
	if err := checkPlaceholders(tmpl, templatable); err != "" {
		c.add(at, "%s", err)
		return nil
	}
	scheme, rest, ok := strings.Cut(tmpl, "://")
	if !ok || (scheme != "https" && scheme != "http") {
		c.add(at, "must start with https://")
		return nil
	}
	hostTmpl, _, _ := strings.Cut(rest, "/")
	if err := hostTemplateProblem(hostTmpl); err != "" {
		c.add(at, "%s", err)
		return nil
	}
	u, err := url.Parse(renderSample(tmpl))
	switch {
	case err != nil:
		c.add(at, "does not parse: %v", err)
		return nil
	case u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Host == "":
		c.add(at, "must have a host and no user info, query or fragment")
		return nil
	}
	if err := hostProblem(u.Scheme, u.Host, opts); err != "" {
		c.add(at, "%s", err)
		return nil
	}
	return u
}

// checkHostTemplate validates an allowed_hosts entry: host or host:port, no scheme or path.
func checkHostTemplate(c *checker, at, tmpl string, templatable map[string]bool, opts options) {
	if err := checkPlaceholders(tmpl, templatable); err != "" {
		c.add(at, "%s", err)
		return
	}
	if err := hostTemplateProblem(tmpl); err != "" {
		c.add(at, "%s", err)
		return
	}
	rendered := renderSample(tmpl)
	u, err := url.Parse("https://" + rendered)
	if err != nil || u.Host != rendered || u.User != nil || u.Path != "" {
		c.add(at, "%q is not a host or host:port", tmpl)
		return
	}
	// The scheme is the base URLs'; under AllowLoopback http hosts are loopback anyway.
	scheme := "https"
	if opts.allowLoopback && isLoopbackHost(u.Hostname()) {
		scheme = "http"
	}
	if err := hostProblem(scheme, u.Host, opts); err != "" {
		c.add(at, "%s", err)
	}
}

// hostTemplateProblem refuses host templates a field value could turn into an arbitrary host: a
// placeholder must be followed by a fixed domain of at least two labels ("{shop}.myshopify.com"),
// and never sit in the port.
func hostTemplateProblem(hostTmpl string) string {
	last := strings.LastIndexByte(hostTmpl, '}')
	if last < 0 {
		return ""
	}
	suffix := hostTmpl[last+1:]
	if strings.Contains(suffix, ":") {
		suffix, _, _ = strings.Cut(suffix, ":")
	}
	if !strings.HasPrefix(suffix, ".") || strings.Count(suffix, ".") < 2 || strings.Contains(hostTmpl[:last], ":") {
		return "a placeholder in the host must be followed by a fixed domain of two or more labels, and never be in the port"
	}
	return ""
}

// hostProblem checks a rendered host[:port] for scheme: https with a DNS name in production;
// under AllowLoopback also http, and IP literals, but then only for loopback hosts.
func hostProblem(scheme, hostport string, opts options) string {
	u := url.URL{Host: hostport}
	host := u.Hostname()
	if host != strings.ToLower(host) {
		return "host must be lower case"
	}
	loopback := isLoopbackHost(host)
	switch {
	case opts.allowLoopback && loopback:
		return ""
	case scheme != "https":
		return "must use https (http only for loopback hosts in catalogs built with AllowLoopback)"
	case net.ParseIP(host) != nil || host == "localhost" || strings.HasSuffix(host, ".localhost"):
		return "must be a DNS name, not an IP address or localhost"
	case !strings.Contains(host, "."):
		return "must be a fully qualified DNS name"
	}
	return ""
}

func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
