package authz

import (
	"context"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bulkhead/bulkhead/pkg/claims"
)

const tenantID = "8a4c2d1e-0000-4000-8000-000000000001"

func user(roles ...string) *claims.Claims {
	return &claims.Claims{TenantID: tenantID, Subject: "u1", Kind: claims.KindUser, Roles: roles}
}

func TestRoleTable(t *testing.T) {
	for _, p := range tenantPermissions {
		if !Has(user("owner"), p) {
			t.Errorf("owner lacks tenant permission %s", p)
		}
		if want := p != TenantDelete; Has(user("admin"), p) != want {
			t.Errorf("admin has %s = %v, want %v", p, !want, want)
		}
	}
	member := map[Permission]bool{
		TenantRead: true, MembersRead: true, ServiceAccountsRead: true, IntegrationsRead: true,
		ConnectionsRead: true, ConnectionsUse: true, ConnectionsManage: true, SyncsRead: true, RecordsRead: true,
	}
	viewer := map[Permission]bool{
		TenantRead: true, MembersRead: true, ServiceAccountsRead: true, IntegrationsRead: true,
		ConnectionsRead: true, SyncsRead: true, RecordsRead: true,
	}
	for _, p := range slices.Concat(tenantPermissions, servicePermissions, operatorPermissions) {
		if Has(user("member"), p) != member[p] {
			t.Errorf("member has %s = %v, want %v", p, !member[p], member[p])
		}
		if Has(user("viewer"), p) != viewer[p] {
			t.Errorf("viewer has %s = %v, want %v", p, !viewer[p], viewer[p])
		}
	}
	// No role grants a service-only or operator-only permission.
	for _, r := range Roles() {
		for _, p := range RolePermissions(r) {
			if !IsTenantPermission(p) {
				t.Errorf("role %s grants non-tenant permission %s", r, p)
			}
		}
	}
}

func TestHasByKind(t *testing.T) {
	cases := []struct {
		name string
		c    *claims.Claims
		p    Permission
		want bool
	}{
		{"user union of roles", user("viewer", "member"), ConnectionsUse, true},
		{"user unknown role grants nothing", user("superuser"), TenantRead, false},
		{"user scope is ignored", &claims.Claims{TenantID: tenantID, Kind: claims.KindUser, Scopes: []string{"tenant.read"}}, TenantRead, false},
		{"sa scope that is a tenant permission", &claims.Claims{TenantID: tenantID, Kind: claims.KindServiceAccount, Scopes: []string{"records.read"}}, RecordsRead, true},
		{"sa without the scope", &claims.Claims{TenantID: tenantID, Kind: claims.KindServiceAccount, Scopes: []string{"records.read"}}, SyncsManage, false},
		{"sa scope naming a service permission grants nothing", &claims.Claims{TenantID: tenantID, Kind: claims.KindServiceAccount, Scopes: []string{"credentials.read"}}, CredentialsRead, false},
		{"sa roles are ignored", &claims.Claims{TenantID: tenantID, Kind: claims.KindServiceAccount, Roles: []string{"owner"}}, TenantRead, false},
		{"service scope", &claims.Claims{Kind: claims.KindService, Subject: "connection", Scopes: []string{"credentials.read"}}, CredentialsRead, true},
		{"service without scope", &claims.Claims{Kind: claims.KindService, Subject: "connection"}, CredentialsRead, false},
		{"service with events.read", &claims.Claims{Kind: claims.KindService, Subject: "connection", Scopes: []string{"events.read"}}, EventsRead, true},
		{"sa scope events.read grants nothing", &claims.Claims{TenantID: tenantID, Kind: claims.KindServiceAccount, Scopes: []string{"events.read"}}, EventsRead, false},
		{"no role grants events.read", user("owner", "admin"), EventsRead, false},
		{"operator scope", &claims.Claims{Kind: claims.KindOperator, Subject: "alice", Scopes: []string{"platform.tenants.manage"}}, PlatformTenantsManage, true},
		{"operator roles are ignored", &claims.Claims{Kind: claims.KindOperator, Subject: "alice", Roles: []string{"owner"}}, TenantRead, false},
		{"nil claims", nil, TenantRead, false},
		{"empty permission", user("owner"), "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Has(tc.c, tc.p); got != tc.want {
				t.Fatalf("Has = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestEffective(t *testing.T) {
	got := Effective(&claims.Claims{TenantID: tenantID, Kind: claims.KindServiceAccount, Scopes: []string{"records.read", "vault.provision", "nonsense"}})
	if !slices.Equal(got, []Permission{RecordsRead}) {
		t.Fatalf("Effective = %v", got)
	}
}

const (
	mGet       = "/bulkhead.test.v1.Svc/Get"
	mDelete    = "/bulkhead.test.v1.Svc/Delete"
	mLogin     = "/bulkhead.test.v1.Svc/Login"
	mWhoAmI    = "/bulkhead.test.v1.Svc/WhoAmI"
	mCreds     = "/bulkhead.test.v1.Svc/ReadCredential"
	mProvision = "/bulkhead.test.v1.Svc/Provision"
	mPlatform  = "/bulkhead.test.v1.Svc/ListTenants"
)

var testPolicy = Policy{
	mGet:       {Permission: ConnectionsRead},
	mDelete:    {Permission: TenantDelete},
	mLogin:     {Public: true},
	mWhoAmI:    {Kinds: []claims.Kind{claims.KindUser, claims.KindServiceAccount, claims.KindService, claims.KindOperator}, NoTenant: true},
	mCreds:     {Permission: CredentialsRead, Kinds: []claims.Kind{claims.KindService, claims.KindServiceAccount}, Services: []string{"connection"}},
	mProvision: {Permission: VaultProvision, Kinds: []claims.Kind{claims.KindService}, Services: []string{"identity"}, NoTenant: true},
	mPlatform:  {Permission: PlatformTenantsRead, Kinds: []claims.Kind{claims.KindOperator}, NoTenant: true},
}

func TestAuthorize(t *testing.T) {
	if err := testPolicy.Validate(); err != nil {
		t.Fatal(err)
	}
	svc := func(name string, scopes ...string) *claims.Claims {
		return &claims.Claims{Kind: claims.KindService, Subject: name, Scopes: scopes}
	}
	withTenant := func(c *claims.Claims) *claims.Claims { c.TenantID = tenantID; return c }
	withCaller := func(c *claims.Claims, caller string) *claims.Claims { c.Caller = caller; return c }
	cases := []struct {
		name   string
		c      *claims.Claims
		method string
		want   codes.Code
	}{
		{"viewer reads", user("viewer"), mGet, codes.OK},
		{"admin cannot delete tenant", user("admin"), mDelete, codes.PermissionDenied},
		{"owner deletes tenant", user("owner"), mDelete, codes.OK},
		{"public without claims", nil, mLogin, codes.OK},
		{"missing claims", nil, mGet, codes.Unauthenticated},
		{"method not in policy", user("owner"), "/bulkhead.test.v1.Svc/Forgotten", codes.PermissionDenied},
		{"method not in policy, no claims", nil, "/bulkhead.test.v1.Svc/Forgotten", codes.PermissionDenied},
		{"user without tenant", &claims.Claims{Kind: claims.KindUser, Subject: "u", Roles: []string{"owner"}}, mGet, codes.PermissionDenied},
		{"user without tenant on no-tenant method", &claims.Claims{Kind: claims.KindUser, Subject: "u"}, mWhoAmI, codes.PermissionDenied},
		{"service not allowed by default kinds", svc("connection", "connections.read"), mGet, codes.PermissionDenied},
		{"operator on tenant method", &claims.Claims{Kind: claims.KindOperator, Subject: "o", Scopes: []string{"connections.read"}}, mGet, codes.PermissionDenied},
		{"who am i as service", svc("sync"), mWhoAmI, codes.OK},
		{"credentials: connection service acting in a tenant", withTenant(svc("connection", "credentials.read")), mCreds, codes.OK},
		{"credentials: service without a tenant", svc("connection", "credentials.read"), mCreds, codes.PermissionDenied},
		{"credentials: sa scope is cut to tenant permissions", withCaller(&claims.Claims{TenantID: tenantID, Kind: claims.KindServiceAccount, Subject: "s", Scopes: []string{"credentials.read"}}, "svc:connection"), mCreds, codes.PermissionDenied},
		{"provision by identity", svc("identity", "vault.provision"), mProvision, codes.OK},
		{"provision by another service", svc("sync", "vault.provision"), mProvision, codes.PermissionDenied},
		{"provision by identity without scope", svc("identity"), mProvision, codes.PermissionDenied},
		{"provision: caller overrides principal", withCaller(svc("identity", "vault.provision"), "svc:sync"), mProvision, codes.PermissionDenied},
		{"provision: caller is not a service", withCaller(svc("identity", "vault.provision"), "user:identity"), mProvision, codes.PermissionDenied},
		{"operator lists tenants", &claims.Claims{Kind: claims.KindOperator, Subject: "o", Scopes: []string{"platform.tenants.read"}}, mPlatform, codes.OK},
		{"operator without scope", &claims.Claims{Kind: claims.KindOperator, Subject: "o"}, mPlatform, codes.PermissionDenied},
		{"owner cannot reach operator method", user("owner"), mPlatform, codes.PermissionDenied},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if tc.c != nil {
				ctx = claims.NewContext(ctx, tc.c)
			}
			err := testPolicy.Authorize(ctx, tc.method)
			if got := status.Code(err); got != tc.want {
				t.Fatalf("code = %v, want %v (err %v)", got, tc.want, err)
			}
		})
	}
}

func TestServicesRestrictionForTenantPrincipal(t *testing.T) {
	p := Policy{mGet: {Permission: ConnectionsRead, Services: []string{"connection"}}}
	for caller, want := range map[string]codes.Code{
		"svc:connection": codes.OK,
		"svc:sync":       codes.PermissionDenied,
		"":               codes.PermissionDenied, // the user called directly, not through the service
	} {
		c := user("viewer")
		c.Caller = caller
		if got := status.Code(p.Authorize(claims.NewContext(context.Background(), c), mGet)); got != want {
			t.Errorf("caller %q: code %v, want %v", caller, got, want)
		}
	}
}

func TestValidate(t *testing.T) {
	bad := map[string]Policy{
		"unknown permission": {mGet: {Permission: "connections.reed"}},
		"unknown kind":       {mGet: {Permission: ConnectionsRead, Kinds: []claims.Kind{"robot"}}},
		"not a full method":  {"Svc/Get": {Permission: ConnectionsRead}},
		"public with perm":   {mLogin: {Public: true, Permission: TenantRead}},
	}
	for name, p := range bad {
		if err := p.Validate(); err == nil {
			t.Errorf("%s: Validate accepted it", name)
		}
	}
}

func TestDeniedHook(t *testing.T) {
	type call struct {
		method string
		c      *claims.Claims
		code   codes.Code
	}
	var calls []call
	hook := func(_ context.Context, method string, c *claims.Claims, refusal error) {
		calls = append(calls, call{method, c, status.Code(refusal)})
	}
	p := Policy{mCreds: {Kinds: []claims.Kind{claims.KindUser, claims.KindService}, Services: []string{"connection"}, Denied: hook}}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	viaConnection := user("viewer")
	viaConnection.Caller = "svc:connection"
	direct := user("owner")
	cases := []struct {
		name      string
		c         *claims.Claims
		want      codes.Code
		wantCalls int
	}{
		{"allowed: no call", viaConnection, codes.OK, 0},
		{"refused: hook sees the claims", direct, codes.PermissionDenied, 1},
		{"no claims: nobody to report", nil, codes.Unauthenticated, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			calls = nil
			ctx := context.Background()
			if tc.c != nil {
				ctx = claims.NewContext(ctx, tc.c)
			}
			if got := status.Code(p.Authorize(ctx, mCreds)); got != tc.want {
				t.Fatalf("code = %v, want %v", got, tc.want)
			}
			if len(calls) != tc.wantCalls {
				t.Fatalf("hook called %d times, want %d", len(calls), tc.wantCalls)
			}
			if tc.wantCalls == 1 && (calls[0].method != mCreds || calls[0].c != tc.c || calls[0].code != tc.want) {
				t.Fatalf("hook got %+v", calls[0])
			}
		})
	}
	if err := (Policy{mLogin: {Public: true, Denied: hook}}).Validate(); err == nil {
		t.Fatal("Validate accepted a public rule with a Denied hook")
	}
}
