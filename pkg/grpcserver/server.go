// Package grpcserver builds Bulkhead's gRPC servers: one interceptor chain (recovery, request id,
// logging, error mapping, authentication, authorization, validation, per-tenant rate limiting),
// the standard health service and server reflection, and serving until a context ends. Every
// service builds its server here so that no service can forget a step or order them differently.
package grpcserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strings"
	"time"

	"buf.build/go/protovalidate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/bulkhead/bulkhead/pkg/authn"
	"github.com/bulkhead/bulkhead/pkg/authz"
	"github.com/bulkhead/bulkhead/pkg/logging"
	"github.com/bulkhead/bulkhead/pkg/ratelimit"
)

// Metadata keys read and written by the chain.
const (
	// MDAuthorization carries "Bearer <token>": the principal the call acts for.
	MDAuthorization = "authorization"
	// MDServiceToken carries the calling service's own token (sub "svc:<name>").
	MDServiceToken = "x-bulkhead-service-token"
	// MDRequestID carries the request id, in both directions.
	MDRequestID = "x-request-id"
)

// healthPrefix is the health service's method prefix; its methods bypass authentication,
// authorization and rate limiting so that probes work without credentials and never page anyone.
const healthPrefix = "/grpc.health.v1.Health/"

// ReflectionMethods are the server reflection methods. They go through the chain like any other
// method, so a policy must name them: Public in development (for grpcurl), or a permission.
var ReflectionMethods = []string{
	"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
	"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
}

// Config holds the server's dependencies. Logger, Verifier and Policy are required.
type Config struct {
	// Logger receives one JSON line per call and the detail of hidden internal errors. Its
	// handler is wrapped with logging.NewHandler so every line carries the request fields.
	Logger *slog.Logger
	// Verifier authenticates bearer and service tokens.
	Verifier *authn.Verifier
	// Policy authorizes each method; it is validated by New.
	Policy authz.Policy
	// RateLimiter, if set, limits calls per tenant (or per caller when there is no tenant).
	RateLimiter *ratelimit.Limiter
	// Validator checks requests against their protovalidate rules; nil builds the default one.
	Validator protovalidate.Validator
	// Health is the health service; nil creates one (serving). Reachable as Server.Health.
	Health *health.Server
	// ShutdownGrace bounds Run's graceful stop before in-flight calls are cut (default 10s).
	ShutdownGrace time.Duration
	// ServerOptions are appended after the chain (message sizes, keepalive, credentials).
	ServerOptions []grpc.ServerOption
}

// Server is a grpc.Server with Bulkhead's chain installed. Register services on it as on a
// grpc.Server (it embeds one), then Run it.
type Server struct {
	*grpc.Server
	// Health lets the service flip its serving status (e.g. NOT_SERVING while draining or while
	// a dependency is down).
	Health *health.Server

	policy authz.Policy
	grace  time.Duration
}

// New checks cfg and builds the server with the chain, health and reflection registered.
func New(cfg Config) (*Server, error) {
	switch {
	case cfg.Logger == nil:
		return nil, errors.New("grpcserver: Config.Logger is required")
	case cfg.Verifier == nil:
		return nil, errors.New("grpcserver: Config.Verifier is required")
	case cfg.Policy == nil:
		return nil, errors.New("grpcserver: Config.Policy is required")
	}
	if err := cfg.Policy.Validate(); err != nil {
		return nil, fmt.Errorf("grpcserver: %w", err)
	}
	if cfg.Validator == nil {
		v, err := protovalidate.New()
		if err != nil {
			return nil, fmt.Errorf("grpcserver: protovalidate: %w", err)
		}
		cfg.Validator = v
	}
	if cfg.Health == nil {
		cfg.Health = health.NewServer()
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = 10 * time.Second
	}
	cfg.Logger = slog.New(logging.NewHandler(cfg.Logger.Handler()))

	unary, stream := chain(cfg)
	opts := append([]grpc.ServerOption{
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
	}, cfg.ServerOptions...)
	gs := grpc.NewServer(opts...)
	healthgrpc.RegisterHealthServer(gs, cfg.Health)
	reflection.Register(gs)
	return &Server{Server: gs, Health: cfg.Health, policy: cfg.Policy, grace: cfg.ShutdownGrace}, nil
}

// CheckPolicy reports registered methods the policy does not mention. Such methods are denied
// at run time anyway; Run refuses to start with them so the mistake shows at deploy, not as
// refusals in production. Health and reflection methods are exempt.
func (s *Server) CheckPolicy() error {
	var missing []string
	for svc, info := range s.GetServiceInfo() {
		for _, m := range info.Methods {
			full := "/" + svc + "/" + m.Name
			if strings.HasPrefix(full, healthPrefix) || isReflection(full) {
				continue
			}
			if _, ok := s.policy[full]; !ok {
				missing = append(missing, full)
			}
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("grpcserver: methods without an authorization rule: %s", strings.Join(missing, ", "))
	}
	return nil
}

func isReflection(method string) bool {
	for _, m := range ReflectionMethods {
		if m == method {
			return true
		}
	}
	return false
}

// Run checks the policy, serves on lis until ctx ends, then reports NOT_SERVING and stops
// gracefully, cutting calls still running after ShutdownGrace. It returns nil after a
// shutdown caused by ctx.
func (s *Server) Run(ctx context.Context, lis net.Listener) error {
	if err := s.CheckPolicy(); err != nil {
		_ = lis.Close()
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("grpcserver: serve: %w", err)
	case <-ctx.Done():
	}
	s.Health.Shutdown()
	stopped := make(chan struct{})
	go func() { s.GracefulStop(); close(stopped) }()
	timer := time.NewTimer(s.grace)
	defer timer.Stop()
	select {
	case <-stopped:
	case <-timer.C:
		s.Stop()
		<-stopped
	}
	<-errc
	return nil
}
