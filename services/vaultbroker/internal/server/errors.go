package server

import (
	"context"
	"errors"
	"time"

	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/services/vaultbroker/internal/vault"
)

// vaultRetryAfter is the retry delay suggested when Vault (or identity) is unreachable: long
// enough not to hammer a Vault that is coming back, short enough for a blip.
const vaultRetryAfter = time.Second

// errTenantMismatch marks the refusal of a request naming a tenant other than its claims'. It
// is only a cause: the caller sees the same NOT_FOUND as for a missing resource.
var errTenantMismatch = errors.New("request names a tenant other than the caller's")

// resource names what a NOT_FOUND is about; a refused cross-tenant request says the same.
type resource string

const (
	resCredential resource = "credential"
	resTenant     resource = "tenant"
)

// vaultError is the one mapping of the Vault layer's errors to what a caller sees. field is
// the request field an InvalidArgument is about. Messages never carry Vault's own text (it may
// name paths) and never any value from the request body.
func vaultError(err error, res resource, field string, maxBytes int) error {
	var ae *apierr.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ae):
		// Already decided upstream (identity unavailable, tenant suspended).
		return err
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, vault.ErrTooLarge):
		return apierr.InvalidArgument(field, "%s is too large: the limit is %d bytes", field, maxBytes).WithCause(err)
	case errors.Is(err, vault.ErrInvalidArgument):
		return apierr.InvalidArgument(field, "%s is not valid for this operation", field).WithCause(err)
	case errors.Is(err, vault.ErrNotFound): // includes ErrTenantNotProvisioned
		return apierr.NotFound(string(res)).WithCause(err)
	case errors.Is(err, vault.ErrConflict):
		return apierr.Aborted("the credential changed since the expected version: re-read it and retry").WithCause(err)
	case errors.Is(err, vault.ErrUnavailable):
		// The Vault layer guarantees nothing was changed by the failed request.
		return apierr.Unavailable("vault", vaultRetryAfter).WithCause(err)
	}
	// ErrLoginDenied, ErrPermissionDenied (a broken layout or trust) and anything unexpected:
	// not the caller's fault, logged with the detail by the error interceptor.
	return apierr.Internal(err)
}
