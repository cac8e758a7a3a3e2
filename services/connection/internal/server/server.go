// Package server holds the connection service's gRPC handlers and its OAuth2 callback. Handlers
// are thin: the interceptor chain (pkg/grpcserver) has authenticated the caller, checked the
// method's rule from Policy and validated the request; a handler checks that the request names
// the caller's own tenant (ownTenant), calls one use case and maps the result.
//
// Handlers embed the Unsafe…Server interfaces rather than Unimplemented…Server, so an RPC added
// to a proto breaks the build until it is implemented here (and gets a Policy rule).
package server

import (
	"context"
	"errors"

	"github.com/google/uuid"
	"google.golang.org/grpc"

	connectionv1 "github.com/bulkhead/bulkhead/gen/bulkhead/connection/v1"
	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/pkg/claims"
	"github.com/bulkhead/bulkhead/services/connection/internal/app"
)

// Register registers the connection service's gRPC services on r: the connection,
// integration and tenant-offboarding use cases a, and the outbox read ev.
func Register(r grpc.ServiceRegistrar, a *app.App, ev *app.Events) error {
	if a == nil || ev == nil {
		return errors.New("server: the use cases are required")
	}
	connectionv1.RegisterConnectionServiceServer(r, &connectionServer{app: a})
	connectionv1.RegisterIntegrationServiceServer(r, &integrationServer{app: a})
	connectionv1.RegisterEventServiceServer(r, &eventServer{events: ev})
	connectionv1.RegisterTenantOffboardingServiceServer(r, &offboardingServer{app: a})
	return nil
}

// sameTenant compares two tenant ids as UUIDs (a request may spell one in upper case).
func sameTenant(a, b string) bool {
	ua, err := uuid.Parse(a)
	if err != nil {
		return false
	}
	ub, err := uuid.Parse(b)
	return err == nil && ua == ub
}

// ownTenant checks that the request names the caller's own tenant. Any other tenant gets
// NotFound(resource), the very answer a missing resource gets, so nobody learns that another
// tenant (or its resources) exists. The use cases then act in the tenant of the claims.
func ownTenant(ctx context.Context, requested, resource string) error {
	c, ok := claims.FromContext(ctx)
	if !ok {
		return apierr.Unauthenticated("missing credentials")
	}
	if c.TenantID == "" || !sameTenant(c.TenantID, requested) {
		return apierr.NotFound(resource)
	}
	return nil
}
