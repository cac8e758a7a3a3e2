package server

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	"github.com/bulkhead/bulkhead/pkg/authz"
	"github.com/bulkhead/bulkhead/pkg/claims"
)

func TestPolicyCoversEveryRPC(t *testing.T) {
	p := Policy()
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	n := 0
	protoregistry.GlobalFiles.RangeFilesByPackage("bulkhead.identity.v1", func(fd protoreflect.FileDescriptor) bool {
		for i := range fd.Services().Len() {
			sd := fd.Services().Get(i)
			for j := range sd.Methods().Len() {
				m := "/" + string(sd.FullName()) + "/" + string(sd.Methods().Get(j).Name())
				if _, ok := p[m]; !ok {
					t.Errorf("%s has no rule", m)
				}
				n++
			}
		}
		return true
	})
	if n == 0 {
		t.Fatal("no identity RPCs found")
	}
	public := map[string]bool{
		identityv1.TenantService_CreateTenant_FullMethodName: true,
		identityv1.TokenService_IssueToken_FullMethodName:    true,
		identityv1.TokenService_GetJwks_FullMethodName:       true,
	}
	for m, r := range p {
		if r.Public && !public[m] && m[:len("/grpc.reflection.")] != "/grpc.reflection." {
			t.Errorf("%s is public", m)
		}
	}
}

// TestTenantOrPlatform checks the handler-side permission of the RPCs whose rule leaves the
// permission to the handler.
func TestTenantOrPlatform(t *testing.T) {
	const tenant = "3f0c8a44-1f5e-4c53-9b0e-6f1d2a3b4c5d"
	const other = "9a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d"
	cases := []struct {
		name   string
		c      *claims.Claims
		target string
		want   codes.Code
	}{
		{"owner of the tenant", &claims.Claims{Kind: claims.KindUser, Subject: other, TenantID: tenant, Roles: []string{"owner"}}, tenant, codes.OK},
		{"viewer lacks tenant.manage", &claims.Claims{Kind: claims.KindUser, Subject: other, TenantID: tenant, Roles: []string{"viewer"}}, tenant, codes.PermissionDenied},
		{"owner of another tenant", &claims.Claims{Kind: claims.KindUser, Subject: other, TenantID: other, Roles: []string{"owner"}}, tenant, codes.NotFound},
		{"upper-case id of own tenant", &claims.Claims{Kind: claims.KindUser, Subject: other, TenantID: tenant, Roles: []string{"owner"}}, "3F0C8A44-1F5E-4C53-9B0E-6F1D2A3B4C5D", codes.OK},
		{"operator with platform scope", &claims.Claims{Kind: claims.KindOperator, Subject: "alice", Scopes: []string{"platform.tenants.manage"}}, tenant, codes.OK},
		{"operator without it", &claims.Claims{Kind: claims.KindOperator, Subject: "alice", Scopes: []string{"platform.tenants.read"}}, tenant, codes.PermissionDenied},
		{"service account with tenant.manage scope", &claims.Claims{Kind: claims.KindServiceAccount, Subject: other, TenantID: tenant, Scopes: []string{"tenant.manage"}}, tenant, codes.OK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := claims.NewContext(context.Background(), tc.c)
			_, got, err := tenantOrPlatform(ctx, tc.target, authz.TenantManage, authz.PlatformTenantsManage)
			if status.Code(err) != tc.want {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if err == nil && got != tenant {
				t.Fatalf("resolved tenant %q, want %q", got, tenant)
			}
		})
	}
	if _, _, err := tenantOrPlatform(context.Background(), tenant, authz.TenantRead, authz.PlatformTenantsRead); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no claims: %v", err)
	}
}
