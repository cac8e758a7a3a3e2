package pgtenant

import (
	"errors"
	"fmt"

	"github.com/google/uuid"
)

// ErrNoTenant means a scope has no valid tenant. Tenant-scoped work never runs unscoped: the
// operation is refused before anything reaches the database.
var ErrNoTenant = errors.New("pgtenant: scope has no valid tenant id")

// ErrInvalidUser means a scope's UserID is set but is not a UUID.
var ErrInvalidUser = errors.New("pgtenant: scope user id is not a UUID")

// Scope is who a transaction acts for. It comes from verified claims, never from a request
// field.
type Scope struct {
	// TenantID is the tenant's UUID (any form google/uuid parses; the canonical form is sent).
	// Required, and not the nil UUID.
	TenantID string
	// UserID is the acting user's UUID, for policies on `app.user_id`; empty when the principal
	// is not a user.
	UserID string
}

// canonical validates s and returns its ids in canonical form (lowercase, hyphenated). The
// result is safe to inline into SQL: it contains only hex digits and hyphens.
func (s Scope) canonical() (tenant, user string, err error) {
	if s.TenantID == "" {
		return "", "", ErrNoTenant
	}
	t, err := uuid.Parse(s.TenantID)
	if err != nil || t == uuid.Nil {
		return "", "", fmt.Errorf("%w: %q", ErrNoTenant, s.TenantID)
	}
	if s.UserID == "" {
		return t.String(), "", nil
	}
	u, err := uuid.Parse(s.UserID)
	if err != nil || u == uuid.Nil {
		return "", "", fmt.Errorf("%w: %q", ErrInvalidUser, s.UserID)
	}
	return t.String(), u.String(), nil
}

// Validate reports whether s can scope a transaction: a wrapped ErrNoTenant or ErrInvalidUser
// if not.
func (s Scope) Validate() error {
	_, _, err := s.canonical()
	return err
}
