// Package catalog holds the integrations Bulkhead knows: which providers exist, how each
// authenticates, where its endpoints are, which connection fields it needs and which hosts a
// proxy may call for it. Integrations are data (an embedded YAML file), not code: adding one is
// an edit to providers.yaml, checked entry by entry when the service starts.
//
// A Catalog is immutable once built and safe for concurrent use. Providers it returns are copies.
package catalog

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

//go:embed providers.yaml
var embedded []byte

// AuthType is how a provider's credentials are obtained.
type AuthType string

// Auth types.
const (
	// AuthOAuth2AuthorizationCode is the authorization-code grant, with PKCE (S256) unless the
	// provider sets disable_pkce.
	AuthOAuth2AuthorizationCode AuthType = "oauth2_authorization_code"
	// AuthOAuth2ClientCredentials is the client-credentials grant: the tenant's app acts for itself.
	AuthOAuth2ClientCredentials AuthType = "oauth2_client_credentials"
	// AuthAPIKey is a static key sent in a header or a query parameter.
	AuthAPIKey AuthType = "api_key"
	// AuthBasic is HTTP Basic with a user name and a password or API token.
	AuthBasic AuthType = "basic"
)

// ConnectionScope is who a connection belongs to.
type ConnectionScope string

// Connection scopes.
const (
	// ScopeOrg connections belong to the tenant: members with the permission use them.
	ScopeOrg ConnectionScope = "org"
	// ScopeUser connections belong to one user: only that user may act through them.
	ScopeUser ConnectionScope = "user"
)

// RevocationStyle is how a revocation endpoint expects to be called.
type RevocationStyle string

// Revocation styles.
const (
	// RevocationRFC7009 is a form POST of token (and token_type_hint) with client authentication.
	RevocationRFC7009 RevocationStyle = "rfc7009"
	// RevocationBearer is a POST authenticated by the access token itself, with no body.
	RevocationBearer RevocationStyle = "bearer"
)

// TokenAuthMethod is how the client authenticates at the token endpoint.
type TokenAuthMethod string

// Token endpoint authentication methods; empty means detect (try Basic, then the form).
const (
	TokenAuthAuto   TokenAuthMethod = ""
	TokenAuthBasic  TokenAuthMethod = "client_secret_basic"
	TokenAuthInBody TokenAuthMethod = "client_secret_post"
)

// APIKeyLocation is where an API key travels.
type APIKeyLocation string

// API key locations.
const (
	APIKeyInHeader APIKeyLocation = "header"
	APIKeyInQuery  APIKeyLocation = "query"
)

// Provider is one integration. URL fields are templates: `{name}` is replaced by the connection
// field of that name, validated against its pattern (see Resolve).
type Provider struct {
	// Key identifies the provider in APIs and storage: lower-case letters, digits and dashes.
	Key         string   `yaml:"key"`
	DisplayName string   `yaml:"display_name"`
	AuthType    AuthType `yaml:"auth_type"`
	// DefaultConnectionScope applies when a tenant's integration settings do not choose one.
	DefaultConnectionScope ConnectionScope `yaml:"default_connection_scope"`
	// Fields are the provider-specific values a connection needs (subdomain, shop, region…).
	Fields []Field `yaml:"connection_fields"`
	// OAuth2 is set exactly for the two OAuth2 auth types.
	OAuth2 *OAuth2 `yaml:"oauth2"`
	// APIKey is set exactly for AuthAPIKey.
	APIKey *APIKey `yaml:"api_key"`
	API    API     `yaml:"api"`

	// patterns holds the compiled field patterns; non-nil once the provider passed validation.
	patterns map[string]*regexp.Regexp
}

// Field is a provider-specific connection field.
type Field struct {
	// Name is what templates reference: lower-case letters, digits and underscores.
	Name        string `yaml:"name"`
	DisplayName string `yaml:"display_name"`
	Required    bool   `yaml:"required"`
	// Pattern is an anchored regular expression (^…$) every value must match. Values are also
	// limited to RFC 3986 unreserved characters whatever the pattern says, so a template can
	// never be made to point at another host or path.
	Pattern string `yaml:"pattern"`
	// Default is used when a connection gives no value.
	Default string `yaml:"default"`
	// Description says where a user finds the value.
	Description string `yaml:"description"`
}

// OAuth2 describes a provider's OAuth2 endpoints and token behaviour.
type OAuth2 struct {
	// AuthorizationURL is required for the authorization-code grant, absent for client credentials.
	AuthorizationURL string `yaml:"authorization_url"`
	TokenURL         string `yaml:"token_url"`
	// RevocationURL is empty when the provider has no revocation endpoint callable this way.
	RevocationURL   string          `yaml:"revocation_url"`
	RevocationStyle RevocationStyle `yaml:"revocation_style"`
	TokenAuthMethod TokenAuthMethod `yaml:"token_auth_method"`
	// DisablePKCE turns PKCE off for a provider that rejects it. RFC 6749 §3.1 makes servers ignore
	// unknown parameters, so PKCE is sent by default.
	DisablePKCE   bool     `yaml:"disable_pkce"`
	DefaultScopes []string `yaml:"default_scopes"`
	// ScopeSeparator joins scopes: " " (the default) or ",". golang.org/x/oauth2 always joins with
	// a space, so for "," pass the joined scope as an explicit parameter (JoinScopes).
	ScopeSeparator string `yaml:"scope_separator"`
	// RefreshTokenRotation: a refresh may return a new refresh token and retire the old one, so
	// the new one must be stored before it is used again.
	RefreshTokenRotation bool `yaml:"refresh_token_rotation"`
	// AccessTokenExpires: access tokens expire (whether or not the token response says when).
	AccessTokenExpires bool `yaml:"access_token_expires"`
	// AssumedAccessTokenLifetime is the lifetime to assume when an expiring token's response
	// omits expires_in (Salesforce does); zero means none is assumed.
	AssumedAccessTokenLifetime time.Duration `yaml:"assumed_access_token_lifetime"`
	// RefreshTokenLifetime is how long an unused refresh token stays valid, when the provider
	// documents it; zero means unknown or unlimited. A connection refreshes well before it elapses,
	// so an idle connection does not die silently.
	RefreshTokenLifetime time.Duration `yaml:"refresh_token_lifetime"`
	// AuthorizationParams are extra authorization request parameters (e.g. access_type=offline).
	AuthorizationParams map[string]string `yaml:"authorization_params"`
}

// UsesPKCE reports whether authorization requests carry a PKCE challenge.
func (o *OAuth2) UsesPKCE() bool { return !o.DisablePKCE }

// JoinScopes joins scopes with the provider's separator.
func (o *OAuth2) JoinScopes(scopes []string) string {
	sep := o.ScopeSeparator
	if sep == "" {
		sep = " "
	}
	return strings.Join(scopes, sep)
}

// APIKey says where an API key goes.
type APIKey struct {
	In APIKeyLocation `yaml:"in"`
	// Name is the header or query parameter name.
	Name string `yaml:"name"`
	// Prefix precedes the key in a header, e.g. "Bearer ".
	Prefix string `yaml:"prefix"`
}

// API describes where a provider's API lives.
type API struct {
	// BaseURLs are the API roots (templates). All share one scheme.
	BaseURLs []string `yaml:"base_urls"`
	// AllowedHosts adds proxy hosts (host or host:port templates) to those of BaseURLs.
	AllowedHosts []string `yaml:"allowed_hosts"`
	// DefaultHeaders are sent on every proxied call (API version headers and the like). They may
	// not carry credentials.
	DefaultHeaders map[string]string `yaml:"default_headers"`
	// TestEndpoint, when set, checks API-key and basic credentials before a connection is created.
	TestEndpoint *TestEndpoint `yaml:"test_endpoint"`
}

// TestEndpoint is a request that succeeds only with valid credentials.
type TestEndpoint struct {
	Method string `yaml:"method"`
	// Path is appended to the first base URL; it may reference fields.
	Path           string `yaml:"path"`
	ExpectedStatus int    `yaml:"expected_status"`
}

// Catalog is a validated, immutable set of providers.
type Catalog struct {
	opts      options
	providers map[string]*Provider
}

type options struct {
	allowLoopback bool
}

// Option configures Parse and New.
type Option func(*options)

// AllowLoopback accepts http:// URLs and loopback hosts (127.0.0.0/8, ::1, localhost) — and only
// those — so tests can point an integration at a provider on loopback. The embedded catalog is
// never built with it.
func AllowLoopback() Option {
	return func(o *options) { o.allowLoopback = true }
}

type document struct {
	Providers []Provider `yaml:"providers"`
}

// Load parses the embedded catalog with no options: production rules, https only.
func Load() (*Catalog, error) {
	return Parse(embedded)
}

// Embedded returns a copy of the embedded catalog's YAML, e.g. to Parse it with AllowLoopback in
// tests that add a loopback provider.
func Embedded() []byte {
	return bytes.Clone(embedded)
}

// New returns an empty catalog, to be extended with With.
func New(opts ...Option) *Catalog {
	c := &Catalog{providers: make(map[string]*Provider)}
	for _, o := range opts {
		o(&c.opts)
	}
	return c
}

// Parse decodes and validates a catalog document. Unknown keys are errors, so a misspelt setting
// cannot silently fall back to a default. Every problem of every provider is reported, each as a
// *ValidationError naming the provider and the field, joined with errors.Join.
func Parse(data []byte, opts ...Option) (*Catalog, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var doc document
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("catalog: decode: %w", err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("catalog: decode: more than one YAML document")
	}
	if len(doc.Providers) == 0 {
		return nil, errors.New("catalog: no providers")
	}

	c := New(opts...)
	var errs []error
	for i := range doc.Providers {
		p := &doc.Providers[i]
		name := p.Key
		if name == "" {
			name = fmt.Sprintf("#%d", i)
		}
		if pErrs := validate(p, name, c.opts); len(pErrs) > 0 {
			errs = append(errs, pErrs...)
			continue
		}
		if _, dup := c.providers[p.Key]; dup {
			errs = append(errs, &ValidationError{Provider: name, Field: "key", Problem: "duplicate key"})
			continue
		}
		c.providers[p.Key] = p
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}

// With returns a new catalog holding c's providers and p, validated under c's options (so a
// loopback provider needs a catalog built with AllowLoopback).
func (c *Catalog) With(p Provider) (*Catalog, error) {
	np := p.clone()
	np.patterns = nil
	name := np.Key
	if name == "" {
		name = "#new"
	}
	if errs := validate(np, name, c.opts); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if _, dup := c.providers[np.Key]; dup {
		return nil, &ValidationError{Provider: name, Field: "key", Problem: "duplicate key"}
	}
	out := &Catalog{opts: c.opts, providers: maps.Clone(c.providers)}
	out.providers[np.Key] = np
	return out, nil
}

// Get returns a copy of the provider with key.
func (c *Catalog) Get(key string) (*Provider, bool) {
	p, ok := c.providers[key]
	if !ok {
		return nil, false
	}
	return p.clone(), true
}

// List returns copies of all providers, ordered by key.
func (c *Catalog) List() []*Provider {
	keys := slices.Sorted(maps.Keys(c.providers))
	out := make([]*Provider, len(keys))
	for i, k := range keys {
		out[i] = c.providers[k].clone()
	}
	return out
}

// AllowsLoopback reports whether c was built with AllowLoopback (http:// loopback providers of
// tests), so the proxy's egress guard may accept http:// too.
func (c *Catalog) AllowsLoopback() bool { return c.opts.allowLoopback }

// Len is the number of providers.
func (c *Catalog) Len() int { return len(c.providers) }

// clone copies p deeply enough that the copy can be modified freely; compiled patterns are
// immutable and shared.
func (p *Provider) clone() *Provider {
	c := *p
	c.Fields = slices.Clone(p.Fields)
	if p.OAuth2 != nil {
		o := *p.OAuth2
		o.DefaultScopes = slices.Clone(o.DefaultScopes)
		o.AuthorizationParams = maps.Clone(o.AuthorizationParams)
		c.OAuth2 = &o
	}
	if p.APIKey != nil {
		k := *p.APIKey
		c.APIKey = &k
	}
	c.API.BaseURLs = slices.Clone(p.API.BaseURLs)
	c.API.AllowedHosts = slices.Clone(p.API.AllowedHosts)
	c.API.DefaultHeaders = maps.Clone(p.API.DefaultHeaders)
	if p.API.TestEndpoint != nil {
		t := *p.API.TestEndpoint
		c.API.TestEndpoint = &t
	}
	return &c
}
