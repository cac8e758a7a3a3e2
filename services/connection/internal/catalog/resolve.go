package catalog

import (
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
)

// FieldErrorCode says what is wrong with a connection field value.
type FieldErrorCode string

// Field error codes.
const (
	// FieldMissing: a required field has no value.
	FieldMissing FieldErrorCode = "missing"
	// FieldInvalid: the value fails the field's pattern or the unreserved-character rule.
	FieldInvalid FieldErrorCode = "invalid"
	// FieldUnknown: the provider declares no field of that name.
	FieldUnknown FieldErrorCode = "unknown"
)

// FieldError is a connection field value Resolve refused. Callers map it to InvalidArgument and
// branch on Code.
type FieldError struct {
	Provider string
	Field    string
	Code     FieldErrorCode
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("catalog: provider %q: connection field %q: %s", e.Provider, e.Field, e.Code)
}

// ErrNotValidated is returned by Resolve for a Provider that did not come from a Catalog.
var ErrNotValidated = errors.New("catalog: provider was not validated by a catalog")

// Endpoints are a provider's URLs for one connection, with its field values filled in.
type Endpoints struct {
	// AuthorizationURL is empty for grants without an authorization step.
	AuthorizationURL string
	TokenURL         string
	// RevocationURL is empty when the provider has none.
	RevocationURL string
	BaseURLs      []string
	// Scheme is the scheme every base URL uses: https, or http for loopback test providers.
	Scheme string
	// AllowedHosts are the hosts a proxy may call: lower-case host[:port], the port only when it
	// is not the scheme's default. Sorted, without duplicates.
	AllowedHosts []string
	// TestURL is the test endpoint on the first base URL; empty when the provider has none.
	TestURL string
	// Fields are the effective field values (defaults applied), to store with the connection.
	Fields map[string]string
}

// AllowsURL reports whether a proxy may send a request to u: the provider's scheme, an allowed
// host, and no user info. It says nothing about where the host resolves; that check belongs to
// the dialer.
func (e Endpoints) AllowsURL(u *url.URL) bool {
	if u == nil || u.Opaque != "" || u.User != nil || u.Scheme != e.Scheme {
		return false
	}
	return slices.Contains(e.AllowedHosts, normalizeHost(u.Scheme, u.Host))
}

// normalizeHost lower-cases host[:port] and drops the scheme's default port.
func normalizeHost(scheme, hostport string) string {
	h := strings.ToLower(hostport)
	switch {
	case scheme == "https" && strings.HasSuffix(h, ":443"):
		return strings.TrimSuffix(h, ":443")
	case scheme == "http" && strings.HasSuffix(h, ":80"):
		return strings.TrimSuffix(h, ":80")
	}
	return h
}

// Resolve checks a connection's field values and renders the provider's templates with them.
// Every value must match its field's pattern and consist of RFC 3986 unreserved characters
// without dot tricks, so no value can change which host or path a URL points at. Unknown field
// names are refused rather than ignored, to surface typos. Errors are *FieldError.
func (p *Provider) Resolve(fields map[string]string) (Endpoints, error) {
	if p.patterns == nil {
		return Endpoints{}, ErrNotValidated
	}
	for _, name := range slices.Sorted(maps.Keys(fields)) {
		if _, ok := p.patterns[name]; !ok {
			return Endpoints{}, &FieldError{Provider: p.Key, Field: name, Code: FieldUnknown}
		}
	}
	values := make(map[string]string, len(p.Fields))
	for _, f := range p.Fields {
		v := fields[f.Name]
		if v == "" {
			v = f.Default
		}
		if v == "" {
			if f.Required {
				return Endpoints{}, &FieldError{Provider: p.Key, Field: f.Name, Code: FieldMissing}
			}
			continue
		}
		if checkValue(p.patterns[f.Name], v) != "" {
			return Endpoints{}, &FieldError{Provider: p.Key, Field: f.Name, Code: FieldInvalid}
		}
		values[f.Name] = v
	}

	e := Endpoints{Fields: values}
	if o := p.OAuth2; o != nil {
		e.AuthorizationURL = render(o.AuthorizationURL, values)
		e.TokenURL = render(o.TokenURL, values)
		e.RevocationURL = render(o.RevocationURL, values)
	}
	hosts := make(map[string]bool)
	for _, b := range p.API.BaseURLs {
		r := render(b, values)
		u, err := url.Parse(r)
		// Validation made this impossible; refuse rather than hand out a URL we did not check.
		if err != nil || u.User != nil || u.Host == "" {
			return Endpoints{}, fmt.Errorf("catalog: provider %q: base URL %q renders badly", p.Key, b)
		}
		e.BaseURLs = append(e.BaseURLs, r)
		e.Scheme = u.Scheme
		hosts[normalizeHost(u.Scheme, u.Host)] = true
	}
	for _, h := range p.API.AllowedHosts {
		hosts[normalizeHost(e.Scheme, render(h, values))] = true
	}
	e.AllowedHosts = slices.Sorted(maps.Keys(hosts))
	if t := p.API.TestEndpoint; t != nil && len(e.BaseURLs) > 0 {
		e.TestURL = strings.TrimSuffix(e.BaseURLs[0], "/") + render(t.Path, values)
	}
	return e, nil
}

// placeholders returns the field names tmpl references as {name}, in order.
func placeholders(tmpl string) ([]string, error) {
	var names []string
	for i := 0; i < len(tmpl); i++ {
		switch tmpl[i] {
		case '{':
			end := strings.IndexByte(tmpl[i:], '}')
			if end < 0 {
				return nil, errors.New("unclosed {")
			}
			name := tmpl[i+1 : i+end]
			if !fieldNameRE.MatchString(name) {
				return nil, fmt.Errorf("placeholder {%s} is not a field name", name)
			}
			names = append(names, name)
			i += end
		case '}':
			return nil, errors.New("unmatched }")
		}
	}
	return names, nil
}

// render replaces each {name} in tmpl; templates were checked by placeholders at load.
func render(tmpl string, values map[string]string) string {
	if !strings.Contains(tmpl, "{") {
		return tmpl
	}
	var b strings.Builder
	for {
		start := strings.IndexByte(tmpl, '{')
		if start < 0 {
			b.WriteString(tmpl)
			return b.String()
		}
		end := strings.IndexByte(tmpl[start:], '}') + start
		b.WriteString(tmpl[:start])
		b.WriteString(values[tmpl[start+1:end]])
		tmpl = tmpl[end+1:]
	}
}

// renderSample renders tmpl with the sample value for every field.
func renderSample(tmpl string) string {
	names, _ := placeholders(tmpl)
	values := make(map[string]string, len(names))
	for _, n := range names {
		values[n] = sample
	}
	return render(tmpl, values)
}
