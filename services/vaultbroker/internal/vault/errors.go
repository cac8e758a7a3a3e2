package vault

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	vaultapi "github.com/hashicorp/vault-client-go"
)

// Errors the broker's Vault layer returns, always wrapped (test with errors.Is). The gRPC layer
// maps them: ErrInvalidArgument (and ErrTooLarge) → InvalidArgument; ErrNotFound and
// ErrTenantNotProvisioned → NotFound; ErrConflict → Aborted; ErrUnavailable → Unavailable with
// retry info; ErrLoginDenied and ErrPermissionDenied → Internal (a broken layout or trust
// configuration, never the caller's fault); anything else → Internal.
var (
	// ErrInvalidArgument: a malformed tenant or credential id, empty data, a bad ciphertext.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrTooLarge: a secret or plaintext over Config.MaxSecretBytes. It is also an
	// ErrInvalidArgument.
	ErrTooLarge error = &childError{msg: "secret too large", parent: ErrInvalidArgument}
	// ErrNotFound: no such credential or version.
	ErrNotFound = errors.New("not found")
	// ErrTenantNotProvisioned: the tenant has no Vault layout (never provisioned, or
	// deprovisioned). It is also an ErrNotFound.
	ErrTenantNotProvisioned error = &childError{msg: "tenant not provisioned in vault", parent: ErrNotFound}
	// ErrConflict: a check-and-set write lost (the credential changed since the version the
	// caller read). Re-read and retry.
	ErrConflict = errors.New("check-and-set conflict")
	// ErrUnavailable: Vault is unreachable, sealed, overloaded or answered 5xx. Nothing was
	// changed by this layer; retrying later is safe.
	ErrUnavailable = errors.New("vault unavailable")
	// ErrLoginDenied: Vault refused the tenant's JWT (bound claim, audience, signature).
	ErrLoginDenied = errors.New("vault login denied")
	// ErrPermissionDenied: Vault refused a freshly logged-in tenant token on its own paths.
	ErrPermissionDenied = errors.New("vault permission denied")
	// ErrNamespacesUnsupported: namespace mode was configured but the server did not prove
	// that namespaces exist and isolate. The broker must not start.
	ErrNamespacesUnsupported = errors.New("vault namespaces unsupported or not isolating")
)

// childError is a sentinel that is also its parent sentinel under errors.Is.
type childError struct {
	msg    string
	parent error
}

func (e *childError) Error() string { return e.msg }
func (e *childError) Unwrap() error { return e.parent }

// statusOf returns Vault's HTTP status for err, or 0 when err is not a Vault response.
func statusOf(err error) int {
	var re *vaultapi.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

// messageOf joins Vault's error strings (never secrets: Vault does not echo request bodies).
func messageOf(err error) string {
	var re *vaultapi.ResponseError
	if errors.As(err, &re) {
		return strings.Join(re.Errors, "; ")
	}
	return ""
}

func isForbidden(err error) bool { return statusOf(err) == http.StatusForbidden }

// classify turns a vault-client-go error into one of this package's sentinels, keeping the
// original as a second wrapped error for logs. op names the operation for the message.
func classify(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", op, err)
	}
	status := statusOf(err)
	switch {
	case status == 0:
		// No HTTP response at all: connection refused, reset, DNS, TLS. vault-client-go
		// returns these unwrapped from net/http after its retries.
		return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
	case status == http.StatusTooManyRequests || status >= 500:
		return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
	case status == http.StatusBadRequest && strings.Contains(messageOf(err), "check-and-set"):
		return fmt.Errorf("%s: %w: %w", op, ErrConflict, err)
	case status == http.StatusNotFound:
		return fmt.Errorf("%s: %w", op, ErrNotFound)
	case status == http.StatusForbidden:
		return fmt.Errorf("%s: %w: %w", op, ErrPermissionDenied, err)
	case status == http.StatusBadRequest:
		return fmt.Errorf("%s: %w: %w", op, ErrInvalidArgument, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}
