package server_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault-client-go"
	"google.golang.org/grpc/codes"

	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	"github.com/bulkhead/bulkhead/services/identity/identitytest"
	"github.com/bulkhead/bulkhead/services/vaultbroker/brokertest"
)

// TestBrokerCredentialAloneCannotLogIn plays an attacker holding the broker's platform
// credential. Identity refuses it a Vault-audience token for a tenant unless it presents a
// caller's token of that tenant that it did not obtain itself — both the direct request and
// laundering a tenant token it minted for itself are refused. (Vault's role additionally binds
// act.sub to the broker; internal/vault tests that layer on its own.) The control: the same
// exchange with a real caller's token as subject logs in.
func TestBrokerCredentialAloneCannotLogIn(t *testing.T) {
	f := newFixture(t)
	if f.b.Mode != "mount" {
		t.Skip("checks the mount-mode role path")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stolen := identitytest.WithToken(ctx, f.b.Identity.ServiceToken(t, brokertest.ClientID, "bulkhead.identity"))
	tokens := identityv1.NewTokenServiceClient(f.b.Identity.Conn(t))
	vaultAud := []string{"bulkhead.vault"}

	if _, err := tokens.ExchangeToken(stolen, &identityv1.ExchangeTokenRequest{TenantId: f.a.ID, Audience: vaultAud}); status(err) != codes.PermissionDenied {
		t.Fatalf("tenant-only exchange for Vault: %v, want PermissionDenied", err)
	}
	own, err := tokens.ExchangeToken(stolen, &identityv1.ExchangeTokenRequest{TenantId: f.a.ID, Audience: []string{"bulkhead.vaultbroker"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tokens.ExchangeToken(stolen, &identityv1.ExchangeTokenRequest{SubjectToken: own.GetAccessToken(), Audience: vaultAud}); status(err) != codes.PermissionDenied {
		t.Fatalf("laundering the broker's own tenant token into a Vault token: %v, want PermissionDenied", err)
	}
	withSubject, err := tokens.ExchangeToken(stolen, &identityv1.ExchangeTokenRequest{SubjectToken: f.tokA, Audience: vaultAud})
	if err != nil {
		t.Fatal(err)
	}

	client, err := vaultapi.New(vaultapi.WithAddress(f.b.Vault.Addr()), vaultapi.WithRequestTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Configuration().HTTPClient.CloseIdleConnections()
	login := func(jwt string) error {
		_, err := client.Write(ctx, "auth/jwt-bulkhead/login", map[string]any{"role": "tenant-" + f.a.ID, "jwt": jwt})
		return err
	}
	// A tenant token without Vault's audience does not log in either.
	if err := login(own.GetAccessToken()); err == nil {
		t.Fatal("Vault accepted a tenant JWT the broker's credential obtained on its own")
	} else if re, ok := err.(*vaultapi.ResponseError); !ok || (re.StatusCode != http.StatusBadRequest && re.StatusCode != http.StatusForbidden) {
		t.Fatalf("login: %v, want 400/403 from Vault", err)
	}
	if err := login(withSubject.GetAccessToken()); err != nil {
		t.Fatalf("control: a JWT exchanged from the tenant's own token: %v", err)
	}
}
