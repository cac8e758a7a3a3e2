package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	brokerv1 "github.com/bulkhead/bulkhead/gen/bulkhead/vaultbroker/v1"
	"github.com/bulkhead/bulkhead/pkg/grpcclient"
	"github.com/bulkhead/bulkhead/pkg/testenv"
	"github.com/bulkhead/bulkhead/services/identity/identitytest"
	"github.com/bulkhead/bulkhead/services/vaultbroker/brokertest"
	"github.com/bulkhead/bulkhead/services/vaultbroker/internal/audit"
)

// TestMain stops the shared servers after the tests and fails the run on leaked goroutines.
func TestMain(m *testing.M) { testenv.Main(m) }

// fixture is one broker with two provisioned tenants, A and B, each with its owner's token,
// and clients as the Bulkhead services would call.
type fixture struct {
	b      *brokertest.Broker
	a, bt  identitytest.Tenant
	tokA   string // A's owner's token (a user principal)
	tokB   string
	conn   brokerv1.BrokerServiceClient // as svc:connection
	sync   brokerv1.BrokerServiceClient // as svc:sync
	direct brokerv1.BrokerServiceClient // no service token: an end user calling directly
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	b := brokertest.Start(t, brokertest.Options{})
	f := &fixture{b: b}
	f.a = b.Identity.CreateTenant(t, "tenant-a")
	f.bt = b.Identity.CreateTenant(t, "tenant-b")
	f.tokA = b.Identity.Token(t, f.a.OwnerKey)
	f.tokB = b.Identity.Token(t, f.bt.OwnerKey)
	b.Provision(t, f.a.ID)
	b.Provision(t, f.bt.ID)
	f.conn = b.Client(t, "connection")
	f.sync = b.Client(t, "sync")
	f.direct = b.Client(t, "")
	return f
}

// asA and asB are contexts whose calls act for A's (B's) owner, as a service forwarding its
// caller's token does.
func (f *fixture) asA(t *testing.T) context.Context { return act(t, f.a.ID, f.tokA) }
func (f *fixture) asB(t *testing.T) context.Context { return act(t, f.bt.ID, f.tokB) }

func act(t *testing.T, tenantID, token string) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return grpcclient.ActAs(ctx, tenantID, token)
}

// put stores data as A's connection credential id and returns the version.
func (f *fixture) put(t *testing.T, ctx context.Context, tenantID, id string, data map[string]string, expected int64) int64 {
	t.Helper()
	resp, err := f.conn.PutCredential(ctx, &brokerv1.PutCredentialRequest{TenantId: tenantID, ConnectionId: id, Data: data, ExpectedVersion: expected})
	if err != nil {
		t.Fatalf("PutCredential: %v", err)
	}
	return resp.GetVersion()
}

// serviceAccountToken creates a service account in tenant (as its owner) with an API key and
// returns a token for it.
func serviceAccountToken(t *testing.T, id *identitytest.Identity, tenantID, ownerToken string) string {
	t.Helper()
	ctx := identitytest.WithToken(context.Background(), ownerToken)
	sas := identityv1.NewServiceAccountServiceClient(id.Conn(t))
	sa, err := sas.CreateServiceAccount(ctx, &identityv1.CreateServiceAccountRequest{
		TenantId: tenantID, Name: "robot", Scopes: []string{"connections.read", "connections.use"},
	})
	if err != nil {
		t.Fatalf("CreateServiceAccount: %v", err)
	}
	key, err := sas.CreateApiKey(ctx, &identityv1.CreateApiKeyRequest{
		TenantId: tenantID, Owner: &identityv1.CreateApiKeyRequest_ServiceAccountId{ServiceAccountId: sa.GetServiceAccount().GetServiceAccountId()},
	})
	if err != nil {
		t.Fatalf("CreateApiKey: %v", err)
	}
	return id.Token(t, key.GetSecret())
}

// tenantServiceToken returns a token for service acting in tenantID on its own (background
// work): ExchangeToken with a tenant and no subject. Identity keeps only tenant permissions
// among the service's scopes.
func tenantServiceToken(t *testing.T, id *identitytest.Identity, service, tenantID string) string {
	t.Helper()
	ctx := identitytest.WithToken(context.Background(), id.ServiceToken(t, service, "bulkhead.identity"))
	resp, err := identityv1.NewTokenServiceClient(id.Conn(t)).ExchangeToken(ctx, &identityv1.ExchangeTokenRequest{
		TenantId: tenantID, Audience: []string{"bulkhead.vaultbroker"},
	})
	if err != nil {
		t.Fatalf("ExchangeToken for %s in %s: %v", service, tenantID, err)
	}
	return resp.GetAccessToken()
}

// wantCode fails unless err has code want.
func wantCode(t *testing.T, err error, want codes.Code) {
	t.Helper()
	if got := grpcstatus.Code(err); got != want {
		t.Fatalf("code = %v, want %v (err: %v)", got, want, err)
	}
}

// retryDelay returns the RetryInfo delay of err's status, or -1.
func retryDelay(err error) time.Duration {
	for _, d := range grpcstatus.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration()
		}
	}
	return -1
}

// reason returns the ErrorInfo reason of err's status.
func reason(err error) string {
	for _, d := range grpcstatus.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

// auditRows returns tenantID's audit events as the app role reads them (newest first).
func auditRows(t *testing.T, b *brokertest.Broker, tenantID string) []audit.Event {
	t.Helper()
	evs, err := audit.NewStore(b.DB.AppDB(t)).List(context.Background(), tenantID, 1000)
	if err != nil {
		t.Fatalf("audit rows: %v", err)
	}
	return evs
}

func newID() string { return uuid.NewString() }

// status returns err's gRPC code.
func status(err error) codes.Code { return grpcstatus.Code(err) }
