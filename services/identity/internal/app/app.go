// Package app holds identity's use cases: one type per resource, one method per use case, each
// type depending only on the narrow store interface it needs. Handlers (internal/server) have
// already authenticated the caller, checked the method's permission and resolved which tenant
// the call may act on; the use cases enforce the rules that need current state (only owners
// grant ownership, a tenant keeps an owner, keys show once) and return apierr errors.
package app

import (
	"errors"
	"time"

	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/services/identity/internal/store"
)

// Reasons specific to identity (ErrorInfo.Reason); part of the API.
const (
	// ReasonLastOwner: the change would leave the tenant without an owner.
	ReasonLastOwner = "LAST_OWNER"
	// ReasonTenantDeleted: the tenant is being offboarded and cannot change state.
	ReasonTenantDeleted = "TENANT_DELETED"
)

// Clock returns the current time; tests may pass a fixed one.
type Clock func() time.Time

func (c Clock) now() time.Time {
	if c == nil {
		return time.Now()
	}
	return c()
}

// storeError translates a store error for a resource into the API's answer. Errors that are
// not store errors (apierr errors returned by checks, driver errors) pass through: the error
// interceptor maps those.
func storeError(err error, resource string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound):
		return apierr.NotFound(resource).WithCause(err)
	case errors.Is(err, store.ErrAlreadyExists):
		return apierr.AlreadyExists(resource).WithCause(err)
	case errors.Is(err, store.ErrLastOwner):
		return apierr.FailedPrecondition(ReasonLastOwner, "the tenant must keep at least one owner")
	}
	return err
}

// Page sizes (the protos say: at most 500, 0 means 100).
const (
	defaultPageSize = 100
	maxPageSize     = 500
)

// PageRequest is a list call's paging input, as the API carries it.
type PageRequest struct {
	Size  int32
	Token string
}

func (p PageRequest) page() (store.Page, error) {
	size := int(p.Size)
	if size <= 0 {
		size = defaultPageSize
	}
	size = min(size, maxPageSize)
	after, err := decodePageToken(p.Token)
	if err != nil {
		return store.Page{}, err
	}
	return store.Page{Size: size, After: after}, nil
}
