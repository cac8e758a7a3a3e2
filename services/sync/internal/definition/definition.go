// Package definition holds the declarative sync definitions: for each integration and model,
// the endpoint, how it paginates, its incremental filter, its primary-key and updated-at fields
// and its default frequency. Definitions are data (an embedded YAML file, like the connection
// catalog), checked when the service starts; a sync that needs code implements Syncer instead.
//
// A Set is immutable once built and safe for concurrent use.
package definition

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

//go:embed definitions.yaml
var embedded []byte

// Pagination styles.
const (
	StyleCursor = "cursor"
	StyleLink   = "link"
	StyleOffset = "offset"
	StylePage   = "page"
)

// Updated-at formats besides a Go layout.
const (
	FormatRFC3339 = "rfc3339"
	FormatUnix    = "unix"
	FormatUnixMS  = "unix_ms"
)

// Pagination says how to reach the next page.
type Pagination struct {
	Style          string `yaml:"style"`
	CursorParam    string `yaml:"cursor_param"`
	NextCursorPath string `yaml:"next_cursor_path"`
	OffsetParam    string `yaml:"offset_param"`
	NextOffsetPath string `yaml:"next_offset_path"`
	PageParam      string `yaml:"page_param"`
	LimitParam     string `yaml:"limit_param"`
	PageSize       int    `yaml:"page_size"`
}

// Incremental is the provider's "updated since" filter.
type Incremental struct {
	// Param is the query parameter; its value is the lower bound in Format.
	Param string `yaml:"param"`
	// Format of the value: rfc3339 (default), unix, unix_ms or a Go layout.
	Format string `yaml:"format"`
}

// Definition describes one model of one integration.
type Definition struct {
	Integration string `yaml:"integration"`
	Model       string `yaml:"model"`
	// BaseURL is the provider's API; empty for test providers configured at run time.
	BaseURL  string            `yaml:"base_url"`
	Endpoint string            `yaml:"endpoint"`
	Query    map[string]string `yaml:"query"`
	Headers  map[string]string `yaml:"headers"`
	// RecordsPath is the dot path of the records array in the body; empty: the body is the array.
	RecordsPath string       `yaml:"records_path"`
	Pagination  Pagination   `yaml:"pagination"`
	Incremental *Incremental `yaml:"incremental"`
	// PrimaryKey is the dot path of the record's id (a string or a number).
	PrimaryKey string `yaml:"primary_key"`
	// UpdatedAt is the dot path of the record's last-update time; empty if it has none.
	UpdatedAt       string        `yaml:"updated_at"`
	UpdatedAtFormat string        `yaml:"updated_at_format"`
	DefaultFreq     time.Duration `yaml:"default_frequency"`
	// SensitiveFields are dot paths of fields whose values are stored encrypted with the
	// tenant's transit key (vault-broker) and decrypted for readers of the feed.
	SensitiveFields []string `yaml:"sensitive_fields"`
}

// SupportsIncremental reports whether runs can fetch only what changed.
func (d *Definition) SupportsIncremental() bool { return d.Incremental != nil }

// Key names a definition.
type Key struct{ Integration, Model string }

func (k Key) String() string { return k.Integration + "/" + k.Model }

// Syncer is the interface for syncs that need code rather than a declarative definition
// (several requests per page, a GraphQL query, a body to sign). The engine calls FetchPage once
// per page with the position the previous page returned ("" for the first page).
type Syncer interface {
	FetchPage(ctx context.Context, req PageRequest) (Page, error)
}

// PageRequest is what a Syncer needs to fetch one page.
type PageRequest struct {
	BaseURL string
	// Token is the connection's credential for this run; never log or store it.
	Token string
	// Since is the incremental lower bound; zero for a full run.
	Since time.Time
	// Position is where the previous page ended; "" for the first page.
	Position string
}

// Page is one page of records and where the next one starts ("" after the last page).
type Page struct {
	Records []Record
	Next    string
}

// Record is one provider record, canonicalised.
type Record struct {
	ExternalID string
	// Payload is the record's canonical JSON (object keys sorted, numbers as sent).
	Payload []byte
	// UpdatedAt is the provider's update time; zero when the definition has none.
	UpdatedAt time.Time
}

// Set is the loaded definitions.
type Set struct {
	defs map[Key]*Definition
}

type file struct {
	Definitions []*Definition `yaml:"definitions"`
}

var (
	integrationPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	modelPattern       = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)
	pathPattern        = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)
)

// Load parses and checks the embedded definitions.
func Load() (*Set, error) { return Parse(embedded) }

// Parse parses and checks definitions in YAML (the embedded file's format). Unknown keys are
// errors, so a typo cannot silently disable a setting.
func Parse(b []byte) (*Set, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var f file
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("definition: parse: %w", err)
	}
	s := &Set{defs: make(map[Key]*Definition, len(f.Definitions))}
	var errs []error
	for i, d := range f.Definitions {
		if d == nil {
			errs = append(errs, fmt.Errorf("definition %d: empty", i))
			continue
		}
		if err := d.check(); err != nil {
			errs = append(errs, fmt.Errorf("definition %s/%s: %w", d.Integration, d.Model, err))
			continue
		}
		k := Key{d.Integration, d.Model}
		if _, dup := s.defs[k]; dup {
			errs = append(errs, fmt.Errorf("definition %s: defined twice", k))
			continue
		}
		s.defs[k] = d
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return s, nil
}

func (d *Definition) check() error {
	switch {
	case !integrationPattern.MatchString(d.Integration):
		return errors.New("integration must match " + integrationPattern.String())
	case !modelPattern.MatchString(d.Model):
		return errors.New("model must match " + modelPattern.String())
	case !strings.HasPrefix(d.Endpoint, "/"):
		return errors.New("endpoint must be a path starting with /")
	case d.RecordsPath != "" && !pathPattern.MatchString(d.RecordsPath):
		return errors.New("records_path is not a dot path")
	case !pathPattern.MatchString(d.PrimaryKey):
		return errors.New("primary_key is required (a dot path)")
	case d.UpdatedAt != "" && !pathPattern.MatchString(d.UpdatedAt):
		return errors.New("updated_at is not a dot path")
	case d.DefaultFreq < 30*time.Second:
		return errors.New("default_frequency must be at least 30s")
	}
	if d.BaseURL != "" {
		u, err := url.Parse(d.BaseURL)
		if err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.User != nil {
			return errors.New("base_url must be an https URL without query or credentials")
		}
	}
	p := &d.Pagination
	if p.PageSize < 1 || p.PageSize > 1000 {
		return errors.New("pagination.page_size must be 1..1000")
	}
	switch p.Style {
	case StyleCursor:
		if p.CursorParam == "" || !pathPattern.MatchString(p.NextCursorPath) {
			return errors.New("cursor pagination needs cursor_param and next_cursor_path")
		}
	case StyleLink:
	case StyleOffset:
		if p.OffsetParam == "" || (p.NextOffsetPath != "" && !pathPattern.MatchString(p.NextOffsetPath)) {
			return errors.New("offset pagination needs offset_param (and a dot path in next_offset_path)")
		}
	case StylePage:
		if p.PageParam == "" {
			return errors.New("page pagination needs page_param")
		}
	default:
		return fmt.Errorf("unknown pagination.style %q", p.Style)
	}
	if d.Incremental != nil {
		if d.Incremental.Param == "" {
			return errors.New("incremental.param is required")
		}
		if d.UpdatedAt == "" {
			return errors.New("incremental syncs need updated_at, to advance the checkpoint")
		}
		if err := checkFormat(d.Incremental.Format); err != nil {
			return fmt.Errorf("incremental.format: %w", err)
		}
	}
	if err := checkFormat(d.UpdatedAtFormat); err != nil {
		return fmt.Errorf("updated_at_format: %w", err)
	}
	for _, f := range d.SensitiveFields {
		// The key and the update time are needed in clear: the store keys and orders by them.
		if !pathPattern.MatchString(f) || f == d.PrimaryKey || f == d.UpdatedAt {
			return fmt.Errorf("sensitive_fields: %q must be a dot path other than primary_key and updated_at", f)
		}
	}
	return nil
}

func checkFormat(f string) error {
	switch f {
	case "", FormatRFC3339, FormatUnix, FormatUnixMS:
		return nil
	}
	// A Go layout must at least format a year.
	if !strings.Contains(f, "2006") {
		return fmt.Errorf("%q is neither rfc3339, unix, unix_ms nor a Go time layout", f)
	}
	return nil
}

// Get returns the definition of integration's model.
func (s *Set) Get(integration, model string) (*Definition, bool) {
	d, ok := s.defs[Key{integration, model}]
	return d, ok
}

// Keys returns every defined (integration, model), sorted.
func (s *Set) Keys() []Key {
	out := make([]Key, 0, len(s.defs))
	for k := range s.defs {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b Key) int { return strings.Compare(a.String(), b.String()) })
	return out
}
