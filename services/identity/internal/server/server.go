// Package server holds identity's gRPC handlers. They are thin: the interceptor chain
// (pkg/grpcserver) has authenticated the caller, checked the method's rule from Policy and
// validated the request; a handler resolves which tenant the call may act on (always the
// caller's own, from verified claims — see ownTenant), calls one use case and maps the result.
//
// Handlers embed the Unsafe…Server interfaces rather than Unimplemented…Server, so an RPC added
// to a proto breaks the build until it is implemented here (and gets a Policy rule).
package server

import (
	"context"
	"errors"

	"google.golang.org/grpc"

	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	"github.com/bulkhead/bulkhead/services/identity/internal/app"
)

// SigningKeys publishes and rotates the token signing keys (token.Keyring).
type SigningKeys interface {
	// JWKS returns the JWK Set document of the published public keys.
	JWKS(ctx context.Context) ([]byte, error)
	// Rotate makes a new key current and returns its kid.
	Rotate(ctx context.Context) (string, error)
}

// Deps are the use cases the handlers call.
type Deps struct {
	Tenants         *app.Tenants
	Members         *app.Members
	ServiceAccounts *app.ServiceAccounts
	Tokens          *app.Tokens
	Keys            SigningKeys
	Events          *app.Events
}

// Register registers identity's services on r.
func Register(r grpc.ServiceRegistrar, d Deps) error {
	if d.Tenants == nil || d.Members == nil || d.ServiceAccounts == nil || d.Tokens == nil || d.Keys == nil || d.Events == nil {
		return errors.New("server: every dependency is required")
	}
	identityv1.RegisterTenantServiceServer(r, &tenantServer{tenants: d.Tenants})
	identityv1.RegisterMemberServiceServer(r, &memberServer{members: d.Members})
	identityv1.RegisterServiceAccountServiceServer(r, &serviceAccountServer{accounts: d.ServiceAccounts})
	identityv1.RegisterTokenServiceServer(r, &tokenServer{tokens: d.Tokens, keys: d.Keys})
	identityv1.RegisterEventServiceServer(r, &eventServer{events: d.Events})
	return nil
}
