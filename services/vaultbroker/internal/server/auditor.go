package server

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	brokerv1 "github.com/bulkhead/bulkhead/gen/bulkhead/vaultbroker/v1"
	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/pkg/claims"
	"github.com/bulkhead/bulkhead/pkg/logging"
	"github.com/bulkhead/bulkhead/pkg/ratelimit"
	"github.com/bulkhead/bulkhead/services/vaultbroker/internal/audit"
)

// servicePrefix is the full-method prefix of the audited service.
var servicePrefix = "/" + brokerv1.BrokerService_ServiceDesc.ServiceName + "/"

// releasesSecret are the methods whose response carries a secret value. For them the audit
// row is committed before the value leaves: if it cannot be written the call fails with
// UNAVAILABLE and nothing is returned, so no secret is ever read unaudited.
var releasesSecret = map[string]bool{
	brokerv1.BrokerService_GetCredential_FullMethodName: true,
	brokerv1.BrokerService_Decrypt_FullMethodName:       true,
}

// AuditSink appends audit events (*audit.Store).
type AuditSink interface {
	Append(ctx context.Context, ev audit.Event) error
}

// AuditorConfig configures an Auditor.
type AuditorConfig struct {
	Sink   AuditSink
	Logger *slog.Logger
	// RefusalLimiter bounds the audit rows refused calls may write per tenant; refusals over
	// the limit are logged (with every field) instead of stored, so a caller cannot fill the
	// table by repeating a refused call (authz runs before rate limiting). Nil stores all.
	RefusalLimiter *ratelimit.Limiter
	// WriteTimeout bounds one audit write (default 5s). Writes outlive the caller's
	// cancellation: the access happened whether or not the caller is still waiting.
	WriteTimeout time.Duration
	Now          func() time.Time
}

// Auditor writes one audit row per BrokerService call that got past authentication: its
// UnaryInterceptor records every call that reached a handler (successes, failures, and
// refusals such as a tenant mismatch), its Denied hook records calls authz refused. Calls
// refused before a tenant is known (bad or missing token, suspended tenant, a tenant-less
// service refused by authz) cannot be attributed to a tenant and appear only in the call log.
//
// Failure policy: for methods that release a secret (GetCredential, Decrypt) an audit write
// failure fails the call — no unaudited secret read. For every other call the change has
// already been made in Vault (whose own audit device records it) and failing the call would
// only make the caller retry a completed write; the event is logged at ERROR with every field
// instead and counted (Failures).
type Auditor struct {
	sink     AuditSink
	log      *slog.Logger
	refusals *ratelimit.Limiter
	timeout  time.Duration
	now      func() time.Time

	failures, dropped atomic.Int64
}

// NewAuditor checks cfg and returns an Auditor.
func NewAuditor(cfg AuditorConfig) (*Auditor, error) {
	if cfg.Sink == nil {
		return nil, errors.New("server: an audit sink is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Auditor{sink: cfg.Sink, log: cfg.Logger, refusals: cfg.RefusalLimiter, timeout: cfg.WriteTimeout, now: cfg.Now}, nil
}

// AuditStats counts what could not be stored.
type AuditStats struct {
	Failures int64 // audit writes that failed
	Dropped  int64 // refusals over RefusalLimiter, logged instead of stored
}

// Stats returns the counters.
func (a *Auditor) Stats() AuditStats {
	return AuditStats{Failures: a.failures.Load(), Dropped: a.dropped.Load()}
}

// UnaryInterceptor audits BrokerService calls. It belongs innermost, right around the handler
// (after authentication, authorization, validation and rate limiting), so that the response
// of a secret-releasing call can still be withheld when its audit row cannot be written.
func (a *Auditor) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if !strings.HasPrefix(info.FullMethod, servicePrefix) {
			return handler(ctx, req)
		}
		resp, err := handler(ctx, req)
		c, ok := claims.FromContext(ctx)
		if !ok {
			return resp, err // every BrokerService method is authenticated; nothing to attribute
		}
		ev := a.event(ctx, info.FullMethod, c, err)
		if ev.TenantID == "" {
			// A tenant-less principal (a provisioning service) acts on the tenant its request
			// names; file the event there. Naming no valid tenant, it touched nothing and
			// there is nowhere to file it.
			if t, ok := req.(interface{ GetTenantId() string }); ok {
				ev.TenantID = canonical(t.GetTenantId())
			}
			if ev.TenantID == "" {
				return resp, err
			}
		}
		if r, ok := req.(interface{ GetConnectionId() string }); ok {
			ev.ConnectionID = sanitizeConnectionID(r.GetConnectionId())
		}
		ev.Version = versionOf(req, resp)
		if err != nil && isRefusal(err) && !a.allowRefusal(ev.TenantID) {
			return resp, err
		}
		if werr := a.write(ctx, ev); werr != nil && err == nil && releasesSecret[info.FullMethod] {
			// The value must not leave without its audit row.
			return nil, apierr.Unavailable("audit log", time.Second).WithCause(werr)
		}
		return resp, err
	}
}

// Denied is the authz.Rule.Denied hook: it audits a refused principal in the tenant its
// claims name (a tenant-less principal cannot be attributed and is only logged by the chain).
func (a *Auditor) Denied(ctx context.Context, fullMethod string, c *claims.Claims, refusal error) {
	if c.TenantID == "" || !strings.HasPrefix(fullMethod, servicePrefix) {
		return
	}
	ev := a.event(ctx, fullMethod, c, refusal)
	if !a.allowRefusal(ev.TenantID) {
		return
	}
	_ = a.write(ctx, ev)
}

func (a *Auditor) allowRefusal(tenant string) bool {
	if a.refusals == nil {
		return true
	}
	if ok, _ := a.refusals.Allow(tenant); ok {
		return true
	}
	a.dropped.Add(1)
	return false
}

// event builds the row for a call by c that ended with err.
func (a *Auditor) event(ctx context.Context, fullMethod string, c *claims.Claims, err error) audit.Event {
	outcome, reason := outcomeOf(err)
	ev := audit.Event{
		TenantID:   c.TenantID,
		OccurredAt: a.now(),
		RequestID:  logging.RequestID(ctx),
		Operation:  strings.TrimPrefix(fullMethod, servicePrefix),
		Outcome:    outcome,
		Reason:     reason,
		Subject:    c.SubjectString(),
		TokenID:    c.TokenID,
	}
	if ev.RequestID == "" {
		ev.RequestID = "none"
	}
	if strings.HasPrefix(c.Caller, "svc:") {
		ev.CallerService = c.Caller
	} else if c.Kind == claims.KindService {
		ev.CallerService = c.SubjectString()
	}
	if c.Actor != "" {
		ev.Actor = c.Actor
		if !strings.HasPrefix(ev.Actor, "svc:") {
			ev.Actor = "svc:" + ev.Actor
		}
	}
	return ev
}

// write appends ev, outliving the caller's cancellation but not WriteTimeout. A failure is
// logged with every field of the event (none is secret) and counted.
func (a *Auditor) write(ctx context.Context, ev audit.Event) error {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.timeout)
	defer cancel()
	err := a.sink.Append(wctx, ev)
	if err != nil {
		a.failures.Add(1)
		a.log.ErrorContext(ctx, "audit write failed", "error", err.Error(),
			"audit.tenant_id", ev.TenantID, "audit.operation", ev.Operation, "audit.outcome", ev.Outcome,
			"audit.reason", ev.Reason, "audit.subject", ev.Subject, "audit.caller_service", ev.CallerService,
			"audit.actor", ev.Actor, "audit.token_id", ev.TokenID, "audit.connection_id", ev.ConnectionID,
			"audit.version", ev.Version, "audit.occurred_at", ev.OccurredAt)
	}
	return err
}

// outcomeOf returns the gRPC code name the caller receives for err, and a short reason:
// "tenant_mismatch" for a request naming another tenant, else the lower-cased ErrorInfo reason.
func outcomeOf(err error) (outcome, reason string) {
	if err == nil {
		return code.Code_OK.String(), ""
	}
	st, _ := apierr.ToStatus(err)
	outcome = code.Code(st.Code()).String()
	if errors.Is(err, errTenantMismatch) {
		return outcome, "tenant_mismatch"
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return outcome, strings.ToLower(info.GetReason())
		}
	}
	return outcome, strings.ToLower(outcome)
}

// isRefusal reports whether err refused the call before Vault was asked: a request naming
// another tenant, or one the handler found malformed. A flood of these is bounded by the
// refusal limiter.
func isRefusal(err error) bool {
	if errors.Is(err, errTenantMismatch) {
		return true
	}
	st, _ := apierr.ToStatus(err)
	return st.Code() == codes.PermissionDenied || st.Code() == codes.InvalidArgument
}

// versionOf returns the version a call produced or asked for (0 when none).
func versionOf(req, resp any) int64 {
	switch r := resp.(type) {
	case interface{ GetVersion() int64 }:
		if v := r.GetVersion(); v > 0 {
			return v
		}
	case interface{ GetLatestVersion() int64 }:
		return r.GetLatestVersion()
	case interface{ GetCurrentVersion() int64 }:
		return r.GetCurrentVersion()
	}
	switch r := req.(type) {
	case interface{ GetVersion() int64 }:
		return r.GetVersion()
	case interface{ GetExpectedVersion() int64 }:
		return r.GetExpectedVersion()
	}
	return 0
}

// sanitizeConnectionID keeps a connection id only when it is a canonical UUID — the only
// form the broker accepts — so that whatever else a caller sends in that field (a secret
// pasted by mistake) never lands in the audit log.
func sanitizeConnectionID(id string) string {
	if canonical(id) != id {
		return ""
	}
	return id
}
