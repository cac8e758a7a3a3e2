// Package secret holds Value, a configuration string that must never be printed: database
// URLs (they carry passwords), Vault tokens, client secrets, key-encryption keys. Every way a
// value reaches a log or a terminal (fmt's %v, %+v, %s and %#v, encoding/json, log/slog) shows
// "[redacted]" instead, so logging a whole service Config cannot leak one; Reveal is the one
// way to the value, and greppable where it is used.
package secret

import (
	"encoding/json"
	"log/slog"
)

// Redacted is what a non-empty Value prints as.
const Redacted = "[redacted]"

// Value is a secret configuration string. The zero value is "no secret" and prints as "", so a
// missing setting stays visible in a logged Config.
//
// Value has no UnmarshalJSON on purpose: a secret read from JSON is read into a plain string
// and converted, so no code path can round-trip a redacted rendering back into a "secret".
type Value string

// Reveal returns the secret itself.
func (s Value) Reveal() string { return string(s) }

// String hides the value from fmt.
func (s Value) String() string {
	if s == "" {
		return ""
	}
	return Redacted
}

// GoString hides the value from %#v, which would otherwise print the underlying string.
func (s Value) GoString() string { return s.String() }

// LogValue hides the value from log/slog.
func (s Value) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalJSON hides the value from encoding/json.
func (s Value) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }
