package server_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	brokerv1 "github.com/bulkhead/bulkhead/gen/bulkhead/vaultbroker/v1"
	"github.com/bulkhead/bulkhead/pkg/grpcclient"
	"github.com/bulkhead/bulkhead/services/vaultbroker/brokertest"
)

// target is tenant A's data that every refused call below names: if a refusal leaked through,
// the call would reach (and change or return) something real.
type target struct {
	tenant, connection, ciphertext string
}

// methodRow calls one BrokerService method with a valid request about tgt.
type methodRow struct {
	// provisioning methods are called by a platform service acting as itself.
	provisioning bool
	call         func(ctx context.Context, c brokerv1.BrokerServiceClient, tgt target) error
}

// methodRows has one row per BrokerService method; TestEveryMethodRefuses fails when the
// service gains a method without one.
var methodRows = map[string]methodRow{
	"ProvisionTenant": {true, func(ctx context.Context, c brokerv1.BrokerServiceClient, tgt target) error {
		_, err := c.ProvisionTenant(ctx, &brokerv1.ProvisionTenantRequest{TenantId: tgt.tenant})
		return err
	}},
	"DeprovisionTenant": {true, func(ctx context.Context, c brokerv1.BrokerServiceClient, tgt target) error {
		_, err := c.DeprovisionTenant(ctx, &brokerv1.DeprovisionTenantRequest{TenantId: tgt.tenant})
		return err
	}},
	"PutCredential": {false, func(ctx context.Context, c brokerv1.BrokerServiceClient, tgt target) error {
		_, err := c.PutCredential(ctx, &brokerv1.PutCredentialRequest{
			TenantId: tgt.tenant, ConnectionId: tgt.connection, Data: map[string]string{"access_token": "overwritten"}, ExpectedVersion: 1,
		})
		return err
	}},
	"GetCredential": {false, func(ctx context.Context, c brokerv1.BrokerServiceClient, tgt target) error {
		_, err := c.GetCredential(ctx, &brokerv1.GetCredentialRequest{TenantId: tgt.tenant, ConnectionId: tgt.connection})
		return err
	}},
	"DeleteCredential": {false, func(ctx context.Context, c brokerv1.BrokerServiceClient, tgt target) error {
		_, err := c.DeleteCredential(ctx, &brokerv1.DeleteCredentialRequest{TenantId: tgt.tenant, ConnectionId: tgt.connection})
		return err
	}},
	"ListCredentialVersions": {false, func(ctx context.Context, c brokerv1.BrokerServiceClient, tgt target) error {
		_, err := c.ListCredentialVersions(ctx, &brokerv1.ListCredentialVersionsRequest{TenantId: tgt.tenant, ConnectionId: tgt.connection})
		return err
	}},
	"Encrypt": {false, func(ctx context.Context, c brokerv1.BrokerServiceClient, tgt target) error {
		_, err := c.Encrypt(ctx, &brokerv1.EncryptRequest{TenantId: tgt.tenant, Plaintext: []byte("x")})
		return err
	}},
	"Decrypt": {false, func(ctx context.Context, c brokerv1.BrokerServiceClient, tgt target) error {
		_, err := c.Decrypt(ctx, &brokerv1.DecryptRequest{TenantId: tgt.tenant, Ciphertext: tgt.ciphertext})
		return err
	}},
	"RotateKey": {false, func(ctx context.Context, c brokerv1.BrokerServiceClient, tgt target) error {
		_, err := c.RotateKey(ctx, &brokerv1.RotateKeyRequest{TenantId: tgt.tenant})
		return err
	}},
}

// TestEveryMethodRefuses tries every BrokerService method (from the service descriptor) with
// the credentials an attacker or a buggy caller could hold, against tenant A's real data:
//   - tenant mismatch: tenant D's principal, through the connection service, naming A →
//     NOT_FOUND, exactly like a missing resource, before Vault is asked (no login, no token
//     exchange). For the provisioning methods the closest thing is the provisioning service
//     with a token scoped to D: identity strips service permissions from tenant-scoped tokens,
//     so it is PERMISSION_DENIED — provisioning is never done on a tenant's behalf;
//   - an end user's token (user, then service account) without a service hop →
//     PERMISSION_DENIED, even for its own tenant and with a valid tenant claim;
//   - a user token in the service-token header → UNAUTHENTICATED.
//
// Afterwards A's credential, key and layout are unchanged.
func TestEveryMethodRefuses(t *testing.T) {
	f := newFixture(t)
	desc := brokerv1.BrokerService_ServiceDesc
	if len(desc.Streams) != 0 {
		t.Fatalf("BrokerService has streams %v: add them to this test", desc.Streams)
	}
	for _, m := range desc.Methods {
		if _, ok := methodRows[m.MethodName]; !ok {
			t.Errorf("method %s has no row in methodRows", m.MethodName)
		}
	}
	if len(methodRows) != len(desc.Methods) {
		t.Errorf("methodRows has %d rows for %d methods", len(methodRows), len(desc.Methods))
	}

	// A's real data, and a tenant D that exists and is provisioned but the broker never served.
	ctxA := f.asA(t)
	conn := newID()
	f.put(t, ctxA, f.a.ID, conn, map[string]string{"access_token": "a-secret"}, 0)
	enc, err := f.conn.Encrypt(ctxA, &brokerv1.EncryptRequest{TenantId: f.a.ID, Plaintext: []byte("a-plain")})
	if err != nil {
		t.Fatal(err)
	}
	tgt := target{tenant: f.a.ID, connection: conn, ciphertext: enc.GetCiphertext()}
	d := f.b.Identity.CreateTenant(t, "tenant-d")
	f.b.Provision(t, d.ID)
	tokD := f.b.Identity.Token(t, d.OwnerKey)
	saA := serviceAccountToken(t, f.b.Identity, f.a.ID, f.tokA)
	provD := tenantServiceToken(t, f.b.Identity, brokertest.ProvisioningService, d.ID)
	provisioner := f.b.Client(t, brokertest.ProvisioningService)

	// A plain client (no pkg/grpcclient, which would strip a service token it did not add):
	// the user's own token as bearer *and* posing as the service token.
	rawConn, err := grpc.NewClient(f.b.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rawConn.Close() })
	raw := brokerv1.NewBrokerServiceClient(rawConn)
	userAsService := func(t *testing.T) context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		t.Cleanup(cancel)
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+f.tokA, "x-bulkhead-service-token", f.tokA)
	}
	beforeVault, beforeIdentity := f.b.VaultStats(), f.b.IdentityStats()

	for _, m := range desc.Methods {
		row := methodRows[m.MethodName]
		t.Run(m.MethodName, func(t *testing.T) {
			cases := []struct {
				name   string
				client brokerv1.BrokerServiceClient
				ctx    context.Context
				want   codes.Code
			}{
				{"end user token directly", f.direct, act(t, f.a.ID, f.tokA), codes.PermissionDenied},
				{"service account token directly", f.direct, act(t, f.a.ID, saA), codes.PermissionDenied},
				{"user token posing as service token", raw, userAsService(t), codes.Unauthenticated},
			}
			if row.provisioning {
				cases = append(cases, struct {
					name   string
					client brokerv1.BrokerServiceClient
					ctx    context.Context
					want   codes.Code
				}{"provisioning service scoped to another tenant", provisioner, grpcclient.ActAs(act(t, d.ID, provD), d.ID, provD), codes.PermissionDenied})
			} else {
				cases = append(cases, struct {
					name   string
					client brokerv1.BrokerServiceClient
					ctx    context.Context
					want   codes.Code
				}{"tenant mismatch through the connection service", f.conn, act(t, d.ID, tokD), codes.NotFound})
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					err := row.call(tc.ctx, tc.client, tgt)
					wantCode(t, err, tc.want)
					if tc.want == codes.NotFound && reason(err) != "NOT_FOUND" {
						t.Fatalf("reason %q, want NOT_FOUND like a missing resource", reason(err))
					}
				})
			}
		})
	}

	// Nothing reached Vault or asked identity for a Vault identity.
	afterVault, afterIdentity := f.b.VaultStats(), f.b.IdentityStats()
	if afterVault.Logins != beforeVault.Logins || afterVault.LoginFailures != beforeVault.LoginFailures || afterVault.Cached != beforeVault.Cached {
		t.Errorf("vault token cache changed during refusals: before %+v, after %+v", beforeVault, afterVault)
	}
	if afterIdentity.VaultJWTsExchanged != beforeIdentity.VaultJWTsExchanged {
		t.Errorf("vault JWTs exchanged during refusals: %d → %d", beforeIdentity.VaultJWTsExchanged, afterIdentity.VaultJWTsExchanged)
	}

	// A is intact.
	got, err := f.conn.GetCredential(ctxA, &brokerv1.GetCredentialRequest{TenantId: f.a.ID, ConnectionId: conn})
	if err != nil || got.GetVersion() != 1 || got.GetData()["access_token"] != "a-secret" {
		t.Fatalf("A's credential after the refusals: %v, %v", got, err)
	}
	dec, err := f.conn.Decrypt(ctxA, &brokerv1.DecryptRequest{TenantId: f.a.ID, Ciphertext: enc.GetCiphertext()})
	if err != nil || string(dec.GetPlaintext()) != "a-plain" {
		t.Fatalf("A's key after the refusals: %v, %v", dec, err)
	}
	rot, err := f.conn.RotateKey(ctxA, &brokerv1.RotateKeyRequest{TenantId: f.a.ID})
	if err != nil || rot.GetLatestVersion() != 2 {
		t.Fatalf("A's key was rotated by a refused call: %v, %v", rot, err)
	}
}
