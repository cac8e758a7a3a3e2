// Package grpcclient makes outgoing gRPC calls carry the right credentials: the token of the
// tenant principal the call acts for (forwarded from the incoming call) and the calling
// service's own token, so the callee can authorize both *which service* calls and *for whom*.
// A call that would act for no tenant without being marked so fails before it is sent.
package grpcclient

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/pkg/claims"
	"github.com/bulkhead/bulkhead/pkg/grpcserver"
	"github.com/bulkhead/bulkhead/pkg/logging"
)

// TokenSource supplies the calling service's own token (sub "svc:<name>"), typically obtained
// from identity and renewed before it expires.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
}

// TokenSourceFunc adapts a function to TokenSource.
type TokenSourceFunc func(ctx context.Context) (string, error)

// Token calls f.
func (f TokenSourceFunc) Token(ctx context.Context) (string, error) { return f(ctx) }

// Options configures the interceptors and Dial.
type Options struct {
	// ServiceToken is this service's own token, sent as x-bulkhead-service-token on every call.
	// Nil sends none (then callees see no Caller and rules with Services refuse the call).
	ServiceToken TokenSource
	// NoTenantMethods are full method names that act on no tenant (e.g. vault-broker's
	// provisioning called by identity). They may be called without a tenant principal in the
	// context; when the context has no principal at all, the service's own token is also sent
	// as the bearer, so the service acts as itself.
	NoTenantMethods []string
	// DialOptions are added by Dial after the interceptors and the default credentials.
	DialOptions []grpc.DialOption
}

type credsKey struct{}

type actAs struct{ tenantID, token string }

// ActAs returns ctx making outgoing calls act for tenantID with token, overriding any incoming
// principal. For work that has no incoming call, e.g. a sync worker using a token obtained from
// identity's ExchangeToken. token is sent as-is: the callee verifies it.
func ActAs(ctx context.Context, tenantID, token string) context.Context {
	return context.WithValue(ctx, credsKey{}, actAs{tenantID: tenantID, token: token})
}

// principal returns the bearer token and tenant outgoing calls act with.
func principal(ctx context.Context) (token, tenantID string) {
	if a, ok := ctx.Value(credsKey{}).(actAs); ok {
		return a.token, a.tenantID
	}
	if c, ok := claims.FromContext(ctx); ok {
		return c.Token, c.TenantID
	}
	return "", ""
}

// errNoTenant is returned, before sending, for a call that needs a tenant principal and has
// none. FailedPrecondition rather than Unauthenticated: the remote side was never asked, the
// calling service is in the wrong state (a bug, or work started outside any request), and an
// Unauthenticated passed up to the end user would wrongly tell them to sign in again.
func errNoTenant(method string) error {
	return apierr.FailedPrecondition("", "outgoing call %s has no tenant principal", method).GRPCStatus().Err()
}

// outgoing returns ctx with the call's credentials set in its outgoing metadata.
func (o *Options) outgoing(ctx context.Context, method string) (context.Context, error) {
	token, tenantID := principal(ctx)
	noTenant := slices.Contains(o.NoTenantMethods, method)
	if tenantID == "" && !noTenant {
		return nil, errNoTenant(method)
	}
	var svc string
	if o.ServiceToken != nil {
		var err error
		if svc, err = o.ServiceToken.Token(ctx); err != nil {
			return nil, apierr.Unavailable("service token", 0).WithCause(fmt.Errorf("grpcclient: %w", err)).GRPCStatus().Err()
		}
	}
	if token == "" {
		token = svc // only reachable for no-tenant methods: the service acts as itself
	}
	if token == "" {
		return nil, errNoTenant(method)
	}
	md, _ := metadata.FromOutgoingContext(ctx)
	md = md.Copy()
	// Set, not append: whatever an earlier layer put there, exactly one credential leaves.
	md.Set(grpcserver.MDAuthorization, "Bearer "+token)
	if svc != "" {
		md.Set(grpcserver.MDServiceToken, svc)
	} else {
		md.Delete(grpcserver.MDServiceToken)
	}
	if id := logging.RequestID(ctx); id != "" && len(md.Get(grpcserver.MDRequestID)) == 0 {
		md.Set(grpcserver.MDRequestID, id)
	}
	return metadata.NewOutgoingContext(ctx, md), nil
}

// UnaryClientInterceptor adds the call's credentials (see Options) to unary calls.
func UnaryClientInterceptor(o Options) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		ctx, err := o.outgoing(ctx, method)
		if err != nil {
			return err
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

// StreamClientInterceptor adds the call's credentials (see Options) to streams.
func StreamClientInterceptor(o Options) grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		ctx, err := o.outgoing(ctx, method)
		if err != nil {
			return nil, err
		}
		return streamer(ctx, desc, cc, method, opts...)
	}
}

// Dial returns a client for target with the credential interceptors installed. Transport
// security is plaintext, for loopback and for a service mesh that provides mTLS around the
// process; outside those, pass grpc.WithTransportCredentials(credentials.NewTLS(…)) in
// DialOptions (later options win). The connection is lazy: nothing is dialled until a call.
func Dial(target string, o Options) (*grpc.ClientConn, error) {
	if target == "" {
		return nil, errors.New("grpcclient: empty target")
	}
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithChainUnaryInterceptor(UnaryClientInterceptor(o)),
		grpc.WithChainStreamInterceptor(StreamClientInterceptor(o)),
	}, o.DialOptions...)
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("grpcclient: %s: %w", target, err)
	}
	return conn, nil
}
