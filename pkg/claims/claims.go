// Package claims holds the verified identity of a caller — tenant, subject, roles, scopes — and
// carries it through a request's context. Only the authentication interceptor creates Claims
// from a token; everything downstream trusts the context value and never a request field.
package claims

import (
	"context"
	"slices"
	"strings"
	"time"
)

// Kind says what sort of principal a subject is; it is the prefix of the JWT `sub` claim.
type Kind string

const (
	KindUser           Kind = "user" // a tenant member
	KindServiceAccount Kind = "sa"   // a tenant's service account (API key holder)
	KindService        Kind = "svc"  // a Bulkhead service acting as itself
	KindOperator       Kind = "op"   // a platform operator (bootstrap credential)
)

// Claims is the verified identity a request acts with.
type Claims struct {
	// TenantID is the tenant the principal acts in; empty for services and operators acting on
	// no tenant. Postgres row-level security and Vault identities are keyed by this value.
	TenantID string
	// Subject is the principal's id without its kind prefix (a UUID for users and service
	// accounts, a name for services and operators).
	Subject string
	Kind    Kind
	Roles   []string
	Scopes  []string
	TokenID string
	// ExpiresAt is when the token these claims came from stops being valid.
	ExpiresAt time.Time
	// Actor is the service acting on the principal's behalf (RFC 8693 `act`), if any.
	Actor string
	// Caller is the verified service principal that made this hop (from the service token
	// header), if any. It differs from Actor: Actor was fixed when the token was minted, Caller
	// is whoever presented it now.
	Caller string
	// Token is the raw bearer token, kept so outgoing calls can forward it. Never log it.
	Token string `json:"-"`
}

// SubjectString renders the JWT `sub` form, e.g. "user:3f2…".
func (c *Claims) SubjectString() string { return string(c.Kind) + ":" + c.Subject }

// UserID is the subject when the principal is a user, else "".
func (c *Claims) UserID() string {
	if c == nil || c.Kind != KindUser {
		return ""
	}
	return c.Subject
}

// HasRole reports whether the claims carry role r.
func (c *Claims) HasRole(r string) bool { return c != nil && slices.Contains(c.Roles, r) }

// HasScope reports whether the claims carry scope s.
func (c *Claims) HasScope(s string) bool { return c != nil && slices.Contains(c.Scopes, s) }

// ParseSubject splits a JWT `sub` value into kind and id. ok is false for an unknown kind or an
// empty id, which verification treats as an invalid token.
func ParseSubject(sub string) (kind Kind, id string, ok bool) {
	k, id, found := strings.Cut(sub, ":")
	if !found || id == "" {
		return "", "", false
	}
	switch Kind(k) {
	case KindUser, KindServiceAccount, KindService, KindOperator:
		return Kind(k), id, true
	}
	return "", "", false
}

type ctxKey struct{}

// NewContext returns ctx carrying c.
func NewContext(ctx context.Context, c *Claims) context.Context {
	return context.WithValue(ctx, ctxKey{}, c)
}

// FromContext returns the claims in ctx, if any.
func FromContext(ctx context.Context) (*Claims, bool) {
	c, ok := ctx.Value(ctxKey{}).(*Claims)
	return c, ok && c != nil
}

// TenantFromContext returns the tenant the request acts in, or "" when there is none. Callers
// that need a tenant must treat "" as a refusal, never as "all tenants".
func TenantFromContext(ctx context.Context) string {
	if c, ok := FromContext(ctx); ok {
		return c.TenantID
	}
	return ""
}
