// Package logging configures Bulkhead's structured logs (log/slog, JSON) and carries the
// request-scoped fields every log line of a request reports: request id, tenant, subject and
// calling service. Tokens and request bodies are never among them.
package logging

import (
	"context"
	"io"
	"log/slog"
	"sync"
)

// Attribute keys shared by every service's logs, so one query finds a request everywhere.
const (
	KeyRequestID = "request_id"
	KeyTenantID  = "tenant_id"
	KeySubject   = "subject"
	KeyCaller    = "caller"
)

// NewJSON returns a JSON logger writing to w whose records carry the request fields found in the
// context passed to the *Context logging methods (InfoContext, ErrorContext…).
func NewJSON(w io.Writer, level slog.Leveler) *slog.Logger {
	return slog.New(NewHandler(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})))
}

// NewHandler wraps h so that records logged with a request's context carry its RequestFields.
func NewHandler(h slog.Handler) slog.Handler {
	if _, ok := h.(*handler); ok {
		return h
	}
	return &handler{inner: h}
}

type handler struct{ inner slog.Handler }

func (h *handler) Enabled(ctx context.Context, l slog.Level) bool { return h.inner.Enabled(ctx, l) }

func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	if f := FieldsFrom(ctx); f != nil {
		r.AddAttrs(f.Attrs()...)
	}
	return h.inner.Handle(ctx, r)
}

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	return &handler{inner: h.inner.WithAttrs(as)}
}

func (h *handler) WithGroup(name string) slog.Handler {
	return &handler{inner: h.inner.WithGroup(name)}
}

// RequestFields are one request's log fields. The request-id interceptor creates them near the
// top of the chain; the authentication interceptor, deeper in, fills in the principal. Because
// the outer interceptors hold the same pointer, the line they write when the call finishes
// reports the tenant even though it was learnt after they started. Safe for concurrent use
// (a streaming handler may log from several goroutines).
type RequestFields struct {
	mu        sync.Mutex
	requestID string
	tenantID  string
	subject   string
	caller    string
}

type fieldsKey struct{}

// WithFields returns ctx carrying a new RequestFields for requestID.
func WithFields(ctx context.Context, requestID string) (context.Context, *RequestFields) {
	f := &RequestFields{requestID: requestID}
	return context.WithValue(ctx, fieldsKey{}, f), f
}

// FieldsFrom returns the request's fields, or nil outside a request. All methods accept nil.
func FieldsFrom(ctx context.Context) *RequestFields {
	f, _ := ctx.Value(fieldsKey{}).(*RequestFields)
	return f
}

// RequestID returns the id of the request ctx belongs to, or "".
func RequestID(ctx context.Context) string {
	return FieldsFrom(ctx).RequestID()
}

// RequestID returns the request id.
func (f *RequestFields) RequestID() string {
	if f == nil {
		return ""
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requestID
}

// SetPrincipal records who the request acts as. subject and caller are in `sub` form
// ("user:…", "svc:connection").
func (f *RequestFields) SetPrincipal(tenantID, subject, caller string) {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tenantID, f.subject, f.caller = tenantID, subject, caller
}

// Attrs returns the non-empty fields as slog attributes.
func (f *RequestFields) Attrs() []slog.Attr {
	if f == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	as := make([]slog.Attr, 0, 4)
	for _, kv := range [...]struct{ k, v string }{
		{KeyRequestID, f.requestID}, {KeyTenantID, f.tenantID}, {KeySubject, f.subject}, {KeyCaller, f.caller},
	} {
		if kv.v != "" {
			as = append(as, slog.String(kv.k, kv.v))
		}
	}
	return as
}
