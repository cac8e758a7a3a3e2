package grpcserver

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"strings"
	"time"
	"unicode"

	"github.com/google/uuid"
	middleware "github.com/grpc-ecosystem/go-grpc-middleware/v2"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	gmlogging "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	gmvalidate "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/protovalidate"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/pkg/authn"
	"github.com/bulkhead/bulkhead/pkg/authz"
	"github.com/bulkhead/bulkhead/pkg/claims"
	"github.com/bulkhead/bulkhead/pkg/logging"
	"github.com/bulkhead/bulkhead/pkg/ratelimit"
)

// chain is the one place the interceptor order is decided. Outermost first.
func chain(cfg Config) ([]grpc.UnaryServerInterceptor, []grpc.StreamServerInterceptor) {
	needsAuth := selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool {
		m := c.FullMethod()
		return !strings.HasPrefix(m, healthPrefix) && !cfg.Policy[m].Public
	})
	notHealth := selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool {
		return !strings.HasPrefix(c.FullMethod(), healthPrefix)
	})
	rec := recovery.WithRecoveryHandlerContext(recoverPanic(cfg.Logger))
	logOpts := []gmlogging.Option{
		// One line per call, at the end, when the code and the principal are known.
		gmlogging.WithLogOnEvents(gmlogging.FinishCall),
	}
	slogger := gmlogging.LoggerFunc(func(ctx context.Context, lvl gmlogging.Level, msg string, fields ...any) {
		cfg.Logger.Log(ctx, slog.Level(lvl), msg, fields...)
	})
	authFn := authenticate(cfg.Verifier)

	unary := []grpc.UnaryServerInterceptor{
		// 1st: a panic anywhere below, including in other interceptors, becomes Internal.
		recovery.UnaryServerInterceptor(rec),
		// Before logging: every log line of the call, and the response, carry the request id.
		unaryRequestID,
		// Outside error mapping so the logged code is the one the client receives.
		gmlogging.UnaryServerInterceptor(slogger, logOpts...),
		// Outside auth and handlers: every error they return goes through apierr.ToStatus once.
		unaryErrors(cfg.Logger),
		// Authentication: bearer (+ service) token → claims; skipped for health and Public rules.
		selector.UnaryServerInterceptor(unaryAuth(authFn), needsAuth),
		// After authentication: authorization reads the verified claims.
		selector.UnaryServerInterceptor(unaryAuthz(cfg.Policy), notHealth),
		// After authz: unauthenticated or forbidden callers don't get to make us parse rules.
		gmvalidate.UnaryServerInterceptor(cfg.Validator),
		// Last: only calls that would run spend a token, and the tenant is known and verified.
		selector.UnaryServerInterceptor(unaryRateLimit(cfg.RateLimiter), notHealth),
	}
	stream := []grpc.StreamServerInterceptor{
		recovery.StreamServerInterceptor(rec),
		streamRequestID,
		gmlogging.StreamServerInterceptor(slogger, logOpts...),
		streamErrors(cfg.Logger),
		selector.StreamServerInterceptor(streamAuth(authFn), needsAuth),
		selector.StreamServerInterceptor(streamAuthz(cfg.Policy), notHealth),
		gmvalidate.StreamServerInterceptor(cfg.Validator),
		selector.StreamServerInterceptor(streamRateLimit(cfg.RateLimiter), notHealth),
	}
	return unary, stream
}

// withContext returns stream with ctx as its context.
func withContext(stream grpc.ServerStream, ctx context.Context) grpc.ServerStream {
	w := middleware.WrapServerStream(stream)
	w.WrappedContext = ctx
	return w
}

// --- recovery ---

// recoverPanic logs the panic with its stack on the server and gives the client a bare
// Internal: a stack trace tells an attacker which code paths exist.
func recoverPanic(log *slog.Logger) recovery.RecoveryHandlerFuncContext {
	return func(ctx context.Context, p any) error {
		method, _ := grpc.Method(ctx)
		log.ErrorContext(ctx, "panic recovered", "grpc.method", method, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		return status.Error(codes.Internal, "internal error")
	}
}

// --- request id ---

// requestID returns the caller's x-request-id when it is sane, else a new one. The id ends up in
// logs, so an arbitrary value (newlines, megabytes) is replaced rather than trusted.
func requestID(ctx context.Context) string {
	if vs := metadata.ValueFromIncomingContext(ctx, MDRequestID); len(vs) == 1 && validRequestID(vs[0]) {
		return vs[0]
	}
	return uuid.NewString()
}

func validRequestID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, r := range s {
		if r > unicode.MaxASCII || !(unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune("-_.:", r)) {
			return false
		}
	}
	return true
}

func unaryRequestID(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	id := requestID(ctx)
	_ = grpc.SetHeader(ctx, metadata.Pairs(MDRequestID, id)) // fails only if headers were sent: not yet
	ctx, _ = logging.WithFields(ctx, id)
	return handler(ctx, req)
}

func streamRequestID(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	id := requestID(ss.Context())
	_ = ss.SetHeader(metadata.Pairs(MDRequestID, id))
	ctx, _ := logging.WithFields(ss.Context(), id)
	return handler(srv, withContext(ss, ctx))
}

// --- error mapping ---

func mapError(ctx context.Context, log *slog.Logger, method string, err error) error {
	st, internal := apierr.ToStatus(err)
	if internal {
		// The client sees only "internal error"; the detail is for us.
		log.ErrorContext(ctx, "internal error", "grpc.method", method, "error", err.Error())
	}
	return st.Err()
}

func unaryErrors(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		if err != nil {
			return nil, mapError(ctx, log, info.FullMethod, err)
		}
		return resp, nil
	}
}

func streamErrors(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := handler(srv, ss); err != nil {
			return mapError(ss.Context(), log, info.FullMethod, err)
		}
		return nil
	}
}

// --- authentication ---

// authenticate verifies the bearer token and, when present, the service token of the hop.
//
// go-grpc-middleware's auth interceptor is not used: it lets any service implementing
// AuthFuncOverride replace authentication, a silent opt-out this chain must not offer.
func authenticate(v *authn.Verifier) func(ctx context.Context) (context.Context, error) {
	return func(ctx context.Context) (context.Context, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		token, err := bearer(md)
		if err != nil {
			return nil, err
		}
		c, err := v.Verify(ctx, token)
		if err != nil {
			return nil, err
		}
		if vs := md.Get(MDServiceToken); len(vs) > 0 {
			if len(vs) != 1 {
				return nil, apierr.Unauthenticated("invalid service token")
			}
			svc, err := v.Verify(ctx, vs[0])
			if err != nil {
				return nil, err
			}
			if svc.Kind != claims.KindService {
				return nil, apierr.Unauthenticated("invalid service token")
			}
			c.Caller = svc.SubjectString()
		}
		logging.FieldsFrom(ctx).SetPrincipal(c.TenantID, c.SubjectString(), c.Caller)
		return claims.NewContext(ctx, c), nil
	}
}

// bearer extracts the token from exactly one "authorization: Bearer <token>" entry.
func bearer(md metadata.MD) (string, error) {
	vs := md.Get(MDAuthorization)
	if len(vs) == 0 {
		return "", apierr.Unauthenticated("missing credentials")
	}
	if len(vs) > 1 {
		return "", apierr.Unauthenticated("invalid credentials")
	}
	scheme, token, ok := strings.Cut(vs[0], " ")
	if !ok || !strings.EqualFold(scheme, "bearer") || strings.TrimSpace(token) == "" {
		return "", apierr.Unauthenticated("invalid credentials")
	}
	return strings.TrimSpace(token), nil
}

func unaryAuth(authFn func(context.Context) (context.Context, error)) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := authFn(ctx)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

func streamAuth(authFn func(context.Context) (context.Context, error)) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := authFn(ss.Context())
		if err != nil {
			return err
		}
		return handler(srv, withContext(ss, ctx))
	}
}

// --- authorization ---

func unaryAuthz(p authz.Policy) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := p.Authorize(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

func streamAuthz(p authz.Policy) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := p.Authorize(ss.Context(), info.FullMethod); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}

// --- rate limiting ---

// limit spends one token for the call: the tenant's bucket when the principal acts in a tenant,
// otherwise a separate bucket keyed by the principal ("svc:sync", "op:alice") or, for public
// methods, the peer's IP. A stream spends one token when it opens.
func limit(ctx context.Context, l *ratelimit.Limiter) error {
	var ok bool
	var wait time.Duration
	switch c, authed := claims.FromContext(ctx); {
	case authed && c.TenantID != "":
		ok, wait = l.Allow(c.TenantID)
	case authed:
		ok, wait = l.AllowNoTenant(c.SubjectString())
	default:
		ok, wait = l.AllowNoTenant("peer:" + peerHost(ctx))
	}
	if !ok {
		return apierr.RateLimited(wait)
	}
	return nil
}

func peerHost(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return "unknown"
	}
	host, _, err := net.SplitHostPort(p.Addr.String())
	if err != nil {
		return p.Addr.String()
	}
	return host
}

func unaryRateLimit(l *ratelimit.Limiter) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if l != nil {
			if err := limit(ctx, l); err != nil {
				return nil, err
			}
		}
		return handler(ctx, req)
	}
}

func streamRateLimit(l *ratelimit.Limiter) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if l != nil {
			if err := limit(ss.Context(), l); err != nil {
				return err
			}
		}
		return handler(srv, ss)
	}
}
