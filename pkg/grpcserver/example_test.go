package grpcserver_test

import (
	"context"
	"log/slog"
	"net"
	"os"
	"os/signal"

	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/bulkhead/bulkhead/pkg/authn"
	"github.com/bulkhead/bulkhead/pkg/authz"
	"github.com/bulkhead/bulkhead/pkg/claims"
	"github.com/bulkhead/bulkhead/pkg/grpcserver"
	"github.com/bulkhead/bulkhead/pkg/logging"
	"github.com/bulkhead/bulkhead/pkg/ratelimit"
)

// How a service wires its server: keys from identity's JWKS, the kill switch (here a function;
// services call identity), one policy entry per RPC, then Run until a signal.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	log := logging.NewJSON(os.Stderr, slog.LevelInfo)

	keys, err := authn.NewRemoteKeys(ctx, authn.RemoteKeysConfig{URL: "http://127.0.0.1:8081/.well-known/jwks.json"})
	if err != nil {
		log.Error("keys", "error", err)
		return
	}
	defer keys.Close(context.Background())
	verifier, err := authn.NewVerifier(authn.VerifierConfig{
		Issuer:   "bulkhead-identity",
		Audience: "bulkhead.connection",
		Keys:     keys,
		Tenants: authn.TenantStatusFunc(func(ctx context.Context, tenantID string) (bool, error) {
			return true, nil // a real service asks identity (permission tenants.status)
		}),
	})
	if err != nil {
		log.Error("verifier", "error", err)
		return
	}
	limiter, err := ratelimit.New(ratelimit.Config{}) // 50 rps, burst 100 per tenant
	if err != nil {
		log.Error("limiter", "error", err)
		return
	}
	srv, err := grpcserver.New(grpcserver.Config{
		Logger:      log,
		Verifier:    verifier,
		RateLimiter: limiter,
		Policy: authz.Policy{
			"/grpc.testing.TestService/UnaryCall": {Permission: authz.ConnectionsRead},
			"/grpc.testing.TestService/EmptyCall": {Public: true},
			"/grpc.testing.TestService/CacheableUnaryCall": {
				Permission: authz.CredentialsRead, Kinds: []claims.Kind{claims.KindService}, Services: []string{"sync"},
			},
		},
	})
	if err != nil {
		log.Error("server", "error", err)
		return
	}
	testpb.RegisterTestServiceServer(srv, testpb.UnimplementedTestServiceServer{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Error("listen", "error", err)
		return
	}
	// Run refuses to start while a registered method has no rule (the TestService has more).
	if err := srv.Run(ctx, lis); err != nil {
		log.Error("run", "error", err)
	}
}
