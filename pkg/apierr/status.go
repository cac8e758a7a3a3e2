package apierr

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ToStatus maps any error to the status a client sees. internal is true when the error's detail
// was hidden and must be logged by the caller. Order matters: domain errors first (they may
// wrap driver errors on purpose), then statuses from downstream calls, then driver errors.
func ToStatus(err error) (st *status.Status, internal bool) {
	if err == nil {
		return status.New(codes.OK, ""), false
	}
	var de *Error
	if errors.As(err, &de) {
		return de.GRPCStatus(), de.Code == codes.Internal || de.Code == codes.Unknown
	}
	if s, ok := status.FromError(err); ok {
		return s, s.Code() == codes.Internal || s.Code() == codes.Unknown
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.New(codes.Canceled, "request canceled"), false
	case errors.Is(err, context.DeadlineExceeded):
		return status.New(codes.DeadlineExceeded, "deadline exceeded"), false
	case errors.Is(err, pgx.ErrNoRows):
		// A bare ErrNoRows means a store forgot to translate it; still never leak existence.
		return NotFound("resource").GRPCStatus(), false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "40001", "40P01": // serialization failure, deadlock: safe to retry
			return Aborted("concurrent update, retry").GRPCStatus(), false
		case "23505":
			return AlreadyExists("resource").GRPCStatus(), false
		case "42501":
			// Insufficient privilege, including "new row violates row-level security policy":
			// the request tried to write outside its tenant. Answer like a missing resource.
			return NotFound("resource").GRPCStatus(), true
		case "57014": // query_canceled (statement timeout)
			return status.New(codes.DeadlineExceeded, "deadline exceeded"), false
		}
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return Unavailable("database", 0).GRPCStatus(), true
	}
	return Internal(err).GRPCStatus(), true
}
