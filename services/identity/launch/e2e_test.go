package launch_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	"github.com/bulkhead/bulkhead/pkg/authn"
	"github.com/bulkhead/bulkhead/pkg/claims"
	"github.com/bulkhead/bulkhead/services/identity/identitytest"
	"github.com/bulkhead/bulkhead/services/identity/launch"
)

// TestEndToEnd walks the onboarding path a new customer takes with nothing but a gRPC client:
// CreateTenant with no credentials, IssueToken with the returned key, then tenant calls with
// the token.
func TestEndToEnd(t *testing.T) {
	id := identitytest.Start(t, identitytest.Options{})
	c := newClients(t, id)

	created, err := c.tenants.CreateTenant(testCtx(t), &identityv1.CreateTenantRequest{
		Name: "Acme", OwnerEmail: "alice@acme.example", OwnerDisplayName: "Alice", IdempotencyKey: "0b4f0c39-onboard",
	})
	if err != nil {
		t.Fatalf("CreateTenant: %v", err)
	}
	tenantID := created.GetTenant().GetTenantId()
	if created.GetTenant().GetStatus() != identityv1.TenantStatus_TENANT_STATUS_ACTIVE ||
		created.GetOwner().GetRole() != identityv1.Role_ROLE_OWNER || created.GetReplayed() {
		t.Fatalf("CreateTenant response: %v", created)
	}
	secret := created.GetApiKeySecret()
	if !strings.HasPrefix(secret, created.GetApiKey().GetPrefix()+"_") {
		t.Fatalf("key %q does not start with its displayed prefix %q", secret, created.GetApiKey().GetPrefix())
	}

	issued, err := c.tokens.IssueToken(testCtx(t), &identityv1.IssueTokenRequest{
		Credential: &identityv1.IssueTokenRequest_ApiKey{ApiKey: secret},
	})
	if err != nil {
		t.Fatalf("IssueToken: %v", err)
	}
	if issued.GetTokenType() != "Bearer" || time.Until(issued.GetExpireTime().AsTime()) > 15*time.Minute {
		t.Fatalf("IssueToken response: %v", issued)
	}
	owner := as(t, issued.GetAccessToken())

	got, err := c.tenants.GetTenant(owner, &identityv1.GetTenantRequest{TenantId: tenantID})
	if err != nil || got.GetTenant().GetName() != "Acme" {
		t.Fatalf("GetTenant: %v, %v", got, err)
	}
	bob, err := c.members.AddMember(owner, &identityv1.AddMemberRequest{
		TenantId: tenantID, Email: "bob@acme.example", Role: identityv1.Role_ROLE_MEMBER,
	})
	if err != nil {
		t.Fatalf("AddMember: %v", err)
	}
	list, err := c.members.ListMembers(owner, &identityv1.ListMembersRequest{TenantId: tenantID})
	if err != nil || len(list.GetMembers()) != 2 || list.GetMembers()[0].GetUserId() != created.GetOwner().GetUserId() {
		t.Fatalf("ListMembers: %v, %v", list, err)
	}
	if _, err := c.members.UpdateMemberRole(owner, &identityv1.UpdateMemberRoleRequest{
		TenantId: tenantID, UserId: bob.GetMember().GetUserId(), Role: identityv1.Role_ROLE_ADMIN,
	}); err != nil {
		t.Fatalf("UpdateMemberRole: %v", err)
	}

	// A service account with an expiring key, whose token carries exactly its scopes.
	sa, err := c.accounts.CreateServiceAccount(owner, &identityv1.CreateServiceAccountRequest{
		TenantId: tenantID, Name: "ci-bot", Scopes: []string{"members.read", "connections.read"},
	})
	if err != nil {
		t.Fatalf("CreateServiceAccount: %v", err)
	}
	key, err := c.accounts.CreateApiKey(owner, &identityv1.CreateApiKeyRequest{
		TenantId:   tenantID,
		Owner:      &identityv1.CreateApiKeyRequest_ServiceAccountId{ServiceAccountId: sa.GetServiceAccount().GetServiceAccountId()},
		ExpireTime: timestamppb.New(time.Now().Add(24 * time.Hour)),
	})
	if err != nil {
		t.Fatalf("CreateApiKey: %v", err)
	}
	saToken := id.Token(t, key.GetSecret(), launch.Audience)
	members, err := c.members.ListMembers(as(t, saToken), &identityv1.ListMembersRequest{TenantId: tenantID})
	if err != nil || len(members.GetMembers()) != 2 {
		t.Fatalf("ListMembers as service account: %v, %v", members, err)
	}
	_, err = c.members.AddMember(as(t, saToken), &identityv1.AddMemberRequest{TenantId: tenantID, Email: "x@acme.example", Role: identityv1.Role_ROLE_VIEWER})
	wantCode(t, err, codes.PermissionDenied)

	keys, err := c.accounts.ListApiKeys(owner, &identityv1.ListApiKeysRequest{TenantId: tenantID})
	if err != nil || len(keys.GetApiKeys()) != 2 {
		t.Fatalf("ListApiKeys: %v, %v", keys, err)
	}
	for _, k := range keys.GetApiKeys() {
		if k.GetLastUseTime() == nil {
			t.Errorf("key %s was used but has no last_use_time", k.GetApiKeyId())
		}
	}

	// The JWKS over gRPC and over HTTP are the same document, and it verifies the token.
	jwks, err := c.tokens.GetJwks(testCtx(t), &identityv1.GetJwksRequest{})
	if err != nil {
		t.Fatalf("GetJwks: %v", err)
	}
	resp, err := http.Get(id.JWKSURL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != jwks.GetJwksJson() {
		t.Fatalf("HTTP JWKS %d %q differs from gRPC %q", resp.StatusCode, body, jwks.GetJwksJson())
	}
	var doc struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil || len(doc.Keys) == 0 {
		t.Fatalf("JWKS document: %v (%s)", err, body)
	}
	health, err := http.Get("http://" + id.HTTPAddr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	_ = health.Body.Close()
	if health.StatusCode != http.StatusOK {
		t.Fatalf("/healthz: %d", health.StatusCode)
	}

	// Another service verifies identity's token through the published JWKS, as connection will.
	ctx := testCtx(t)
	remote, err := authn.NewRemoteKeys(ctx, authn.RemoteKeysConfig{URL: id.JWKSURL})
	if err != nil {
		t.Fatal(err)
	}
	defer remote.Close(ctx)
	v, err := authn.NewVerifier(authn.VerifierConfig{
		Issuer: id.Issuer, Audience: "bulkhead.connection", Keys: remote,
		Tenants: authn.TenantStatusFunc(func(_ context.Context, tid string) (bool, error) { return tid == tenantID, nil }),
	})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := v.Verify(ctx, issued.GetAccessToken())
	if err != nil {
		t.Fatalf("verify through JWKS: %v", err)
	}
	if cl.TenantID != tenantID || cl.Kind != claims.KindUser || cl.Subject != created.GetOwner().GetUserId() || !cl.HasRole("owner") {
		t.Fatalf("claims %+v", cl)
	}
}

func TestOperator(t *testing.T) {
	id := identitytest.Start(t, identitytest.Options{})
	c := newClients(t, id)
	a, b := id.CreateTenant(t, "a"), id.CreateTenant(t, "b")
	op := as(t, id.OperatorToken(t))

	var seen []string
	req := &identityv1.ListTenantsRequest{PageSize: 1}
	for {
		resp, err := c.tenants.ListTenants(op, req)
		if err != nil {
			t.Fatalf("ListTenants: %v", err)
		}
		for _, tn := range resp.GetTenants() {
			seen = append(seen, tn.GetTenantId())
		}
		if resp.GetNextPageToken() == "" {
			break
		}
		req.PageToken = resp.GetNextPageToken()
	}
	if len(seen) != 2 || seen[0] != a.ID || seen[1] != b.ID {
		t.Fatalf("ListTenants paged %v, want [%s %s]", seen, a.ID, b.ID)
	}
	if _, err := c.tenants.GetTenant(op, &identityv1.GetTenantRequest{TenantId: b.ID}); err != nil {
		t.Fatalf("operator GetTenant: %v", err)
	}
	s, err := c.tenants.SuspendTenant(op, &identityv1.SuspendTenantRequest{TenantId: b.ID, Reason: "abuse"})
	if err != nil || s.GetTenant().GetStatus() != identityv1.TenantStatus_TENANT_STATUS_SUSPENDED || s.GetTenant().GetSuspendReason() != "abuse" {
		t.Fatalf("SuspendTenant: %v, %v", s, err)
	}
	r, err := c.tenants.ResumeTenant(op, &identityv1.ResumeTenantRequest{TenantId: b.ID})
	if err != nil || r.GetTenant().GetStatus() != identityv1.TenantStatus_TENANT_STATUS_ACTIVE {
		t.Fatalf("ResumeTenant: %v, %v", r, err)
	}
	_, err = c.tenants.GetTenant(op, &identityv1.GetTenantRequest{TenantId: "7d1f3f52-5d3c-4f0e-9d7e-2f4b7b0a0c11"})
	wantCode(t, err, codes.NotFound)

	// Operators do not act inside tenants.
	_, err = c.members.ListMembers(op, &identityv1.ListMembersRequest{TenantId: a.ID})
	wantCode(t, err, codes.PermissionDenied)

	// A signing-key rotation keeps tokens signed before it valid and publishes both keys.
	before := id.Token(t, a.OwnerKey, launch.Audience)
	rot, err := c.tokens.RotateSigningKey(op, &identityv1.RotateSigningKeyRequest{})
	if err != nil || rot.GetKid() == "" {
		t.Fatalf("RotateSigningKey: %v, %v", rot, err)
	}
	if _, err := c.tenants.GetTenant(as(t, before), &identityv1.GetTenantRequest{TenantId: a.ID}); err != nil {
		t.Fatalf("token from before the rotation: %v", err)
	}
	after := id.Token(t, a.OwnerKey, launch.Audience)
	if _, err := c.tenants.GetTenant(as(t, after), &identityv1.GetTenantRequest{TenantId: a.ID}); err != nil {
		t.Fatalf("token from after the rotation: %v", err)
	}

	// A bad platform secret is refused like any bad credential.
	_, err = c.tokens.IssueToken(testCtx(t), &identityv1.IssueTokenRequest{
		Credential: &identityv1.IssueTokenRequest_Platform{Platform: &identityv1.PlatformCredential{ClientId: identitytest.Operator, ClientSecret: "wrong"}},
	})
	wantCode(t, err, codes.Unauthenticated)
}

func TestGetTenantStatus(t *testing.T) {
	id := identitytest.Start(t, identitytest.Options{})
	c := newClients(t, id)
	a := id.CreateTenant(t, "a")
	svc := as(t, id.ServiceToken(t, "vaultbroker", launch.Audience))
	st, err := c.tenants.GetTenantStatus(svc, &identityv1.GetTenantStatusRequest{TenantId: a.ID})
	if err != nil || st.GetStatus() != identityv1.TenantStatus_TENANT_STATUS_ACTIVE {
		t.Fatalf("GetTenantStatus: %v, %v", st, err)
	}
	_, err = c.tenants.GetTenantStatus(svc, &identityv1.GetTenantStatusRequest{TenantId: "7d1f3f52-5d3c-4f0e-9d7e-2f4b7b0a0c11"})
	wantCode(t, err, codes.NotFound)
	// A tenant's own owner may not ask (services only).
	_, err = c.tenants.GetTenantStatus(as(t, id.Token(t, a.OwnerKey)), &identityv1.GetTenantStatusRequest{TenantId: a.ID})
	wantCode(t, err, codes.PermissionDenied)
}
