package launch_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/pkg/authz"
	"github.com/bulkhead/bulkhead/services/identity/identitytest"
	"github.com/bulkhead/bulkhead/services/identity/launch"
)

// TestDeletingTenant: after DeleteTenant the tenant is DELETING. Its own principals are refused
// at once, exactly as for a suspension, while a service holding tenants.offboard can still
// obtain a tenant token — and a Vault token with it as subject — to finish offboarding. Nothing
// else gets one, and once the tenant is DELETED not even that service does.
func TestDeletingTenant(t *testing.T) {
	id := identitytest.Start(t, identitytest.Options{Services: map[string][]authz.Permission{
		"connection":  {authz.TokensExchange, authz.TenantsStatus, authz.TenantsOffboard},
		"sync":        {authz.TokensExchange, authz.TenantsStatus, authz.ConnectionsUse},
		"vaultbroker": {authz.TokensExchange, authz.TenantsStatus},
	}})
	c := newClients(t, id)
	tn, other := id.CreateTenant(t, "leaving"), id.CreateTenant(t, "staying")
	owner := id.Token(t, tn.OwnerKey)
	op := as(t, id.OperatorToken(t))
	conn := as(t, id.ServiceToken(t, "connection", launch.Audience))
	syncCtx := as(t, id.ServiceToken(t, "sync", launch.Audience))
	broker := as(t, id.ServiceToken(t, "vaultbroker", launch.Audience))
	exchange := func(ctx context.Context, req *identityv1.ExchangeTokenRequest) (string, error) {
		resp, err := c.tokens.ExchangeToken(ctx, req)
		return resp.GetAccessToken(), err
	}
	background := func(ctx context.Context, tenantID string) (string, error) {
		return exchange(ctx, &identityv1.ExchangeTokenRequest{TenantId: tenantID, Audience: []string{"bulkhead.vaultbroker"}})
	}

	// Before the saga runs (it is not started here), a new tenant shows its first step pending.
	got, err := c.tenants.GetTenant(op, &identityv1.GetTenantRequest{TenantId: tn.ID})
	if err != nil {
		t.Fatal(err)
	}
	if l := got.GetTenant().GetLifecycle(); l.GetPendingStep() != "vault.provision" || l.GetNextAttemptTime() == nil || l.GetDeleteTime() != nil {
		t.Fatalf("new tenant's lifecycle: %v", l)
	}

	del, err := c.tenants.DeleteTenant(as(t, owner), &identityv1.DeleteTenantRequest{TenantId: tn.ID})
	if err != nil {
		t.Fatal(err)
	}
	if tt := del.GetTenant(); tt.GetStatus() != identityv1.TenantStatus_TENANT_STATUS_DELETING ||
		tt.GetLifecycle().GetPendingStep() != "connections.offboard" || tt.GetLifecycle().GetDeleteTime() == nil {
		t.Fatalf("deleted tenant: %v", tt)
	}
	st, err := c.tenants.GetTenantStatus(conn, &identityv1.GetTenantStatusRequest{TenantId: tn.ID})
	if err != nil || st.GetStatus() != identityv1.TenantStatus_TENANT_STATUS_DELETING {
		t.Fatalf("GetTenantStatus: %v, %v", st, err)
	}

	// The offboarding service's background token: issued, carrying tenants.offboard.
	connToken, err := background(conn, tn.ID)
	if err != nil {
		t.Fatalf("connection's token for a DELETING tenant: %v", err)
	}
	claims, err := verifierFor(t, id, "bulkhead.vaultbroker").Verify(testCtx(t), connToken)
	if err != nil {
		t.Fatal(err)
	}
	if claims.Subject != "connection" || claims.TenantID != tn.ID || !slices.Contains(claims.Scopes, string(authz.TenantsOffboard)) {
		t.Fatalf("claims %+v", claims)
	}
	// The broker logs in to the tenant's Vault role with it as subject.
	if _, err := exchange(broker, &identityv1.ExchangeTokenRequest{SubjectToken: connToken, Audience: []string{"bulkhead.vault"}}); err != nil {
		t.Fatalf("Vault token for offboarding: %v", err)
	}

	refusals := []struct {
		name string
		call func() error
	}{
		{"the owner's token", func() error {
			_, err := c.tenants.GetTenant(as(t, owner), &identityv1.GetTenantRequest{TenantId: tn.ID})
			return err
		}},
		{"the owner's API key", func() error {
			_, err := c.tokens.IssueToken(testCtx(t), &identityv1.IssueTokenRequest{Credential: &identityv1.IssueTokenRequest_ApiKey{ApiKey: tn.OwnerKey}})
			return err
		}},
		{"a service without tenants.offboard", func() error { _, err := background(syncCtx, tn.ID); return err }},
		{"a user token for offboarding", func() error {
			_, err := exchange(conn, &identityv1.ExchangeTokenRequest{TenantId: tn.ID, UserId: tn.OwnerID, Audience: []string{"bulkhead.vaultbroker"}})
			return err
		}},
		{"the owner's token as a Vault subject", func() error {
			_, err := exchange(broker, &identityv1.ExchangeTokenRequest{SubjectToken: owner, Audience: []string{"bulkhead.vault"}})
			return err
		}},
		{"resuming it", func() error {
			_, err := c.tenants.ResumeTenant(op, &identityv1.ResumeTenantRequest{TenantId: tn.ID})
			return err
		}},
	}
	for _, r := range refusals {
		t.Run(r.name, func(t *testing.T) {
			err := r.call()
			if code(err) != codes.PermissionDenied && code(err) != codes.Unauthenticated && code(err) != codes.FailedPrecondition {
				t.Fatalf("got %v, want a refusal", err)
			}
		})
	}
	// The other tenant is untouched.
	if _, err := background(syncCtx, other.ID); err != nil {
		t.Fatalf("another tenant's token: %v", err)
	}

	// Once offboarding is complete (the saga's last step, done here by hand) nothing reaches
	// the tenant any more, not even the offboarding service.
	if _, err := id.DB.SuperPool(t).Exec(testCtx(t), `UPDATE tenants SET status = 'deleted', lifecycle_step = NULL, lifecycle_next_at = NULL WHERE id = $1`, tn.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() error {
		if _, err := background(conn, tn.ID); reason(err) != apierr.ReasonTenantSuspended {
			return fmt.Errorf("connection still gets a token for a DELETED tenant: %v", err)
		}
		return nil
	})
	// Within the status cache's TTL (set by hand, nobody told the cache).
	eventually(t, 5*time.Second, func() error {
		_, err := exchange(broker, &identityv1.ExchangeTokenRequest{SubjectToken: connToken, Audience: []string{"bulkhead.vault"}})
		if reason(err) != apierr.ReasonTenantSuspended {
			return fmt.Errorf("Vault token for a DELETED tenant: %v", err)
		}
		return nil
	})
}
