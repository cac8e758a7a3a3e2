// Package apierr holds Bulkhead's domain errors and the one function that maps any error to a
// gRPC status. Handlers and use cases return these errors (or wrap them with %w); only the
// error interceptor turns them into statuses, so the mapping lives in exactly one place.
package apierr

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Domain is the ErrorInfo domain of every Bulkhead error.
const Domain = "bulkhead.dev"

// Reasons clients may branch on. They are part of the API: never rename one.
const (
	ReasonNotFound           = "NOT_FOUND"
	ReasonInvalidArgument    = "INVALID_ARGUMENT"
	ReasonAlreadyExists      = "ALREADY_EXISTS"
	ReasonPermissionDenied   = "PERMISSION_DENIED"
	ReasonUnauthenticated    = "UNAUTHENTICATED"
	ReasonTenantSuspended    = "TENANT_SUSPENDED"
	ReasonFailedPrecondition = "FAILED_PRECONDITION"
	ReasonConflict           = "CONFLICT"
	ReasonRateLimited        = "RATE_LIMITED"
	ReasonUnavailable        = "UNAVAILABLE"
	ReasonIdempotencyReuse   = "IDEMPOTENCY_KEY_REUSED"
)

// Error is a domain error that knows its gRPC status. Message is shown to the caller: it must
// never contain a secret, a token or another tenant's data.
type Error struct {
	Code       codes.Code
	Reason     string
	Message    string
	Metadata   map[string]string
	RetryAfter time.Duration // > 0 adds RetryInfo
	Field      string        // set for InvalidArgument: adds BadRequest field violation
	cause      error
}

func (e *Error) Error() string {
	if e.cause != nil {
		return e.Message + ": " + e.cause.Error()
	}
	return e.Message
}

// Unwrap exposes the internal cause to errors.Is/As; the cause never reaches the client.
func (e *Error) Unwrap() error { return e.cause }

// GRPCStatus implements the interface grpc-go's status.FromError looks for.
func (e *Error) GRPCStatus() *status.Status {
	st := status.New(e.Code, e.Message)
	details := []protoadaptDetail{&errdetails.ErrorInfo{Reason: e.Reason, Domain: Domain, Metadata: e.Metadata}}
	if e.RetryAfter > 0 {
		details = append(details, &errdetails.RetryInfo{RetryDelay: durationpb.New(e.RetryAfter)})
	}
	if e.Field != "" {
		details = append(details, &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: e.Field, Description: e.Message}}})
	}
	withDetails, err := st.WithDetails(details...)
	if err != nil {
		return st
	}
	return withDetails
}

// WithCause records an internal cause (for logs and errors.Is) without showing it to clients.
func (e *Error) WithCause(err error) *Error { c := *e; c.cause = err; return &c }

// NotFound is returned for a missing resource and, identically, for another tenant's resource:
// the message names only the kind of resource so that existence never leaks.
func NotFound(resource string) *Error {
	return &Error{Code: codes.NotFound, Reason: ReasonNotFound, Message: resource + " not found", Metadata: map[string]string{"resource": resource}}
}

// InvalidArgument reports a bad field.
func InvalidArgument(field, format string, args ...any) *Error {
	return &Error{Code: codes.InvalidArgument, Reason: ReasonInvalidArgument, Message: fmt.Sprintf(format, args...), Field: field}
}

// AlreadyExists reports a uniqueness conflict on resource.
func AlreadyExists(resource string) *Error {
	return &Error{Code: codes.AlreadyExists, Reason: ReasonAlreadyExists, Message: resource + " already exists", Metadata: map[string]string{"resource": resource}}
}

// PermissionDenied reports that the caller is known but may not do this.
func PermissionDenied(format string, args ...any) *Error {
	return &Error{Code: codes.PermissionDenied, Reason: ReasonPermissionDenied, Message: fmt.Sprintf(format, args...)}
}

// Unauthenticated reports missing or invalid credentials. The message is deliberately vague.
func Unauthenticated(format string, args ...any) *Error {
	return &Error{Code: codes.Unauthenticated, Reason: ReasonUnauthenticated, Message: fmt.Sprintf(format, args...)}
}

// TenantSuspended is the kill switch's answer.
func TenantSuspended() *Error {
	return &Error{Code: codes.PermissionDenied, Reason: ReasonTenantSuspended, Message: "tenant is suspended"}
}

// FailedPrecondition reports a state that forbids the operation.
func FailedPrecondition(reason, format string, args ...any) *Error {
	if reason == "" {
		reason = ReasonFailedPrecondition
	}
	return &Error{Code: codes.FailedPrecondition, Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// Aborted reports a lost race (e.g. a check-and-set); the client should re-read and retry.
func Aborted(format string, args ...any) *Error {
	return &Error{Code: codes.Aborted, Reason: ReasonConflict, Message: fmt.Sprintf(format, args...)}
}

// RateLimited reports an exhausted quota and when to retry.
func RateLimited(retryAfter time.Duration) *Error {
	return &Error{Code: codes.ResourceExhausted, Reason: ReasonRateLimited, Message: "rate limit exceeded", RetryAfter: retryAfter}
}

// Unavailable reports a dependency outage; nothing was changed, retry later.
func Unavailable(what string, retryAfter time.Duration) *Error {
	return &Error{Code: codes.Unavailable, Reason: ReasonUnavailable, Message: what + " is unavailable", RetryAfter: retryAfter}
}

// Internal hides cause from the client; it is logged by the error interceptor.
func Internal(cause error) *Error {
	return &Error{Code: codes.Internal, Reason: "INTERNAL", Message: "internal error", cause: cause}
}

// Is reports whether err is a domain error with reason.
func Is(err error, reason string) bool {
	var e *Error
	return errors.As(err, &e) && e.Reason == reason
}
