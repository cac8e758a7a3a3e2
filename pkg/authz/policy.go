package authz

import (
	"context"
	"fmt"
	"slices"
	"sort"

	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/pkg/claims"
)

// Rule says who may call one method.
type Rule struct {
	// Public methods need no credentials at all (e.g. sign-in, JWKS). Every other field is
	// ignored; the authentication interceptor skips them too.
	Public bool
	// Permission the principal must hold (see Has). Empty means any authenticated principal that
	// passes the other checks — use it only for methods about the caller itself ("who am I").
	Permission Permission
	// Kinds of principal allowed; empty means users and service accounts (the tenant principals).
	Kinds []claims.Kind
	// Services, if set, restricts the hop to these Bulkhead services, by name ("connection", not
	// "svc:connection"): either the verified service token of the hop (claims.Caller) or the
	// principal itself when it is a `svc:` principal must be one of them.
	Services []string
	// NoTenant marks operator and service methods that act on no tenant. Without it the
	// principal must carry a tenant id.
	NoTenant bool
	// Denied, if set, is called when this rule refuses an authenticated principal, with the
	// verified claims and the refusal, before Authorize returns it. Services use it to audit
	// refused attempts (an end user's token trying to read a secret) in the tenant the claims
	// name: it is the one place that still knows who was refused. It runs on the request path
	// and must be quick; it cannot change the decision.
	Denied func(ctx context.Context, fullMethod string, c *claims.Claims, refusal error)
}

// Policy maps full gRPC method names ("/bulkhead.identity.v1.IdentityService/GetTenant") to their
// rules. A method missing from the policy is denied: adding an RPC without deciding who may call
// it cannot open it to everyone.
type Policy map[string]Rule

// tenantKinds are the default Rule.Kinds.
var tenantKinds = []claims.Kind{claims.KindUser, claims.KindServiceAccount}

// Validate reports configuration mistakes a server must refuse to start with: unknown
// permissions (a typo would deny everyone, or worse, be "fixed" by granting it), unknown kinds,
// and public rules that also name a permission (which would suggest a check that never runs).
func (p Policy) Validate() error {
	methods := make([]string, 0, len(p))
	for m := range p {
		methods = append(methods, m)
	}
	sort.Strings(methods)
	for _, m := range methods {
		r := p[m]
		if len(m) < 3 || m[0] != '/' {
			return fmt.Errorf("authz: policy method %q is not a full method name (/pkg.Service/Method)", m)
		}
		if r.Public {
			if r.Permission != "" || len(r.Kinds) > 0 || len(r.Services) > 0 || r.Denied != nil {
				return fmt.Errorf("authz: %s: a public rule must not also name permission, kinds, services or a Denied hook", m)
			}
			continue
		}
		if r.Permission != "" && !Known(r.Permission) {
			return fmt.Errorf("authz: %s: unknown permission %q", m, r.Permission)
		}
		for _, k := range r.Kinds {
			if _, _, ok := claims.ParseSubject(string(k) + ":x"); !ok {
				return fmt.Errorf("authz: %s: unknown principal kind %q", m, k)
			}
		}
	}
	return nil
}

// Authorize checks the claims in ctx against the rule for fullMethod. It returns nil, or an
// *apierr.Error: Unauthenticated when there are no claims, PermissionDenied otherwise —
// including for a method missing from the policy (chosen over Unimplemented so that a
// misconfigured policy reads as a refusal, not as a missing feature; the method does exist).
func (p Policy) Authorize(ctx context.Context, fullMethod string) error {
	rule, ok := p[fullMethod]
	if !ok {
		return apierr.PermissionDenied("method is not allowed")
	}
	if rule.Public {
		return nil
	}
	c, ok := claims.FromContext(ctx)
	if !ok {
		return apierr.Unauthenticated("missing credentials")
	}
	err := rule.check(c)
	if err != nil && rule.Denied != nil {
		rule.Denied(ctx, fullMethod, c, err)
	}
	return err
}

func (r Rule) check(c *claims.Claims) error {
	kinds := r.Kinds
	if len(kinds) == 0 {
		kinds = tenantKinds
	}
	if !slices.Contains(kinds, c.Kind) {
		return apierr.PermissionDenied("this principal may not call this method")
	}
	// A tenant principal without a tenant would fall through to "no tenant" code paths; refuse
	// it whatever the rule says.
	if (c.Kind == claims.KindUser || c.Kind == claims.KindServiceAccount) && c.TenantID == "" {
		return apierr.PermissionDenied("principal has no tenant")
	}
	if !r.NoTenant && c.TenantID == "" {
		return apierr.PermissionDenied("method requires a tenant")
	}
	if len(r.Services) > 0 && !fromService(c, r.Services) {
		return apierr.PermissionDenied("method may only be called by specific services")
	}
	if r.Permission != "" && !Has(c, r.Permission) {
		return apierr.PermissionDenied("missing permission %s", r.Permission)
	}
	return nil
}

// fromService reports whether the hop came from one of services: the verified service token
// (Caller) if present, else the principal itself when it is a service.
func fromService(c *claims.Claims, services []string) bool {
	if c.Caller != "" {
		kind, name, ok := claims.ParseSubject(c.Caller)
		return ok && kind == claims.KindService && slices.Contains(services, name)
	}
	return c.Kind == claims.KindService && slices.Contains(services, c.Subject)
}
