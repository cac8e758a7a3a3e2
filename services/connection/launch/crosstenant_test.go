package launch_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	connectionv1 "github.com/bulkhead/bulkhead/gen/bulkhead/connection/v1"
	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	"github.com/bulkhead/bulkhead/services/connection/connectiontest"
	"github.com/bulkhead/bulkhead/services/connection/launch"
)

// clients are the connection service's two APIs on one instance.
type clients struct {
	conns  connectionv1.ConnectionServiceClient
	ints   connectionv1.IntegrationServiceClient
	events connectionv1.EventServiceClient
	offb   connectionv1.TenantOffboardingServiceClient
}

// target names what a call aims at.
type target struct {
	TenantID, ConnectionID string
}

// connectionMethods lists every RPC of bulkhead.connection.v1 from the registered
// descriptors, so a new RPC shows up in the tables below without anyone remembering it.
func connectionMethods(t *testing.T) []string {
	var out []string
	protoregistry.GlobalFiles.RangeFilesByPackage("bulkhead.connection.v1", func(fd protoreflect.FileDescriptor) bool {
		for i := range fd.Services().Len() {
			sd := fd.Services().Get(i)
			for j := range sd.Methods().Len() {
				out = append(out, "/"+string(sd.FullName())+"/"+string(sd.Methods().Get(j).Name()))
			}
		}
		return true
	})
	if len(out) < 10 {
		t.Fatalf("found only %d connection RPCs; is the generated code linked in?", len(out))
	}
	slices.Sort(out)
	return out
}

// call is one RPC made with ctx's credentials against a target.
type call func(ctx context.Context, c clients, to target) error

// calls has one call per RPC of the connection service. Calls that could write use harmless
// values (a disable, which the tests undo or check), and credential calls use a bogus secret
// so nothing would be created even if a check failed open — the code asserted is the point.
func calls() map[string]call {
	return map[string]call{
		connectionv1.ConnectionService_CreateCredentialConnection_FullMethodName: func(ctx context.Context, c clients, to target) error {
			_, err := c.conns.CreateCredentialConnection(ctx, &connectionv1.CreateCredentialConnectionRequest{TenantId: to.TenantID, Integration: connectiontest.APIKey, Secret: "implant"})
			return err
		},
		connectionv1.ConnectionService_StartAuthorization_FullMethodName: func(ctx context.Context, c clients, to target) error {
			_, err := c.conns.StartAuthorization(ctx, &connectionv1.StartAuthorizationRequest{TenantId: to.TenantID, Integration: connectiontest.OAuthUser, ConnectionId: to.ConnectionID})
			return err
		},
		connectionv1.ConnectionService_GetConnection_FullMethodName: func(ctx context.Context, c clients, to target) error {
			_, err := c.conns.GetConnection(ctx, &connectionv1.GetConnectionRequest{TenantId: to.TenantID, ConnectionId: to.ConnectionID})
			return err
		},
		connectionv1.ConnectionService_ListConnections_FullMethodName: func(ctx context.Context, c clients, to target) error {
			resp, err := c.conns.ListConnections(ctx, &connectionv1.ListConnectionsRequest{TenantId: to.TenantID})
			if err == nil && slices.ContainsFunc(resp.GetConnections(), func(x *connectionv1.Connection) bool { return x.GetConnectionId() == to.ConnectionID }) {
				return status.Error(codes.OK, "listed") // visible: the caller's check fails on OK
			}
			if err == nil {
				return status.Error(codes.NotFound, "not listed")
			}
			return err
		},
		connectionv1.ConnectionService_SetConnectionEnabled_FullMethodName: func(ctx context.Context, c clients, to target) error {
			_, err := c.conns.SetConnectionEnabled(ctx, &connectionv1.SetConnectionEnabledRequest{TenantId: to.TenantID, ConnectionId: to.ConnectionID, Enabled: false})
			return err
		},
		connectionv1.ConnectionService_RevokeConnection_FullMethodName: func(ctx context.Context, c clients, to target) error {
			_, err := c.conns.RevokeConnection(ctx, &connectionv1.RevokeConnectionRequest{TenantId: to.TenantID, ConnectionId: to.ConnectionID})
			return err
		},
		connectionv1.ConnectionService_DeleteConnection_FullMethodName: func(ctx context.Context, c clients, to target) error {
			// allow_missing must not turn another tenant's or user's connection into a silent OK.
			_, err := c.conns.DeleteConnection(ctx, &connectionv1.DeleteConnectionRequest{TenantId: to.TenantID, ConnectionId: to.ConnectionID})
			return err
		},
		connectionv1.ConnectionService_GetAccessToken_FullMethodName: func(ctx context.Context, c clients, to target) error {
			_, err := c.conns.GetAccessToken(ctx, &connectionv1.GetAccessTokenRequest{TenantId: to.TenantID, ConnectionId: to.ConnectionID})
			return err
		},
		connectionv1.ConnectionService_Proxy_FullMethodName: func(ctx context.Context, c clients, to target) error {
			resp, err := c.conns.Proxy(ctx, &connectionv1.ProxyRequest{TenantId: to.TenantID, ConnectionId: to.ConnectionID, Method: "GET", Path: "/me"})
			if err == nil && resp.GetStatus() != 200 {
				return status.Errorf(codes.Unknown, "provider answered %d", resp.GetStatus())
			}
			return err
		},
		connectionv1.EventService_ListEvents_FullMethodName: func(ctx context.Context, c clients, to target) error {
			_, err := c.events.ListEvents(ctx, &connectionv1.ListEventsRequest{})
			return err
		},
		connectionv1.TenantOffboardingService_OffboardTenant_FullMethodName: func(ctx context.Context, c clients, to target) error {
			_, err := c.offb.OffboardTenant(ctx, &connectionv1.OffboardTenantRequest{TenantId: to.TenantID, AbandonPending: true})
			return err
		},
		connectionv1.IntegrationService_ListIntegrations_FullMethodName: func(ctx context.Context, c clients, to target) error {
			_, err := c.ints.ListIntegrations(ctx, &connectionv1.ListIntegrationsRequest{TenantId: to.TenantID})
			return err
		},
		connectionv1.IntegrationService_GetIntegration_FullMethodName: func(ctx context.Context, c clients, to target) error {
			_, err := c.ints.GetIntegration(ctx, &connectionv1.GetIntegrationRequest{TenantId: to.TenantID, Integration: connectiontest.OAuthOrg})
			return err
		},
		connectionv1.IntegrationService_UpdateIntegrationSettings_FullMethodName: func(ctx context.Context, c clients, to target) error {
			off := false
			_, err := c.ints.UpdateIntegrationSettings(ctx, &connectionv1.UpdateIntegrationSettingsRequest{TenantId: to.TenantID, Integration: connectiontest.OAuthOrg, Enabled: &off})
			return err
		},
	}
}

// perConnection marks the RPCs that address a connection inside a tenant: they are also called
// with the attacker's own tenant id and the victim's connection id, which only row-level
// security (and the use cases) stop.
var perConnection = map[string]bool{
	connectionv1.ConnectionService_StartAuthorization_FullMethodName:   true,
	connectionv1.ConnectionService_GetConnection_FullMethodName:        true,
	connectionv1.ConnectionService_ListConnections_FullMethodName:      true,
	connectionv1.ConnectionService_SetConnectionEnabled_FullMethodName: true,
	connectionv1.ConnectionService_RevokeConnection_FullMethodName:     true,
	connectionv1.ConnectionService_DeleteConnection_FullMethodName:     true,
	connectionv1.ConnectionService_GetAccessToken_FullMethodName:       true,
	connectionv1.ConnectionService_Proxy_FullMethodName:                true,
}

// servicesOnly marks the RPCs no tenant principal may call at all (they span tenants, for
// Bulkhead services holding events.read or tenants.offboard): every tenant principal, whatever
// it targets, gets PERMISSION_DENIED from the policy before any tenant is looked at, so
// nothing about another tenant can leak either. TestListEvents covers what the services may
// read, TestOffboardTenantRefusals and TestOffboardTenant who may offboard.
var servicesOnly = map[string]bool{
	connectionv1.EventService_ListEvents_FullMethodName:                 true,
	connectionv1.TenantOffboardingService_OffboardTenant_FullMethodName: true,
}

// world is two tenants: B with an org-level connection and member y's user-level one; A with
// an owner and a member x.
type world struct {
	env             *connectiontest.Env
	c               clients
	a, b            connectiontest.Tenant
	aOwner, bOwner  string
	bY, bZ, bViewer string // B's members' tokens: y owns bUser; z is another member
	syncToken       string
	bOrg, bUser     string // B's connection ids
	bYID            string
}

func addMember(t *testing.T, env *connectiontest.Env, owner string, tenant connectiontest.Tenant, email string, role identityv1.Role) (id, token string) {
	t.Helper()
	resp, err := identityv1.NewMemberServiceClient(env.Identity.Conn(t)).AddMember(as(t, owner), &identityv1.AddMemberRequest{TenantId: tenant.ID, Email: email, Role: role})
	if err != nil {
		t.Fatal(err)
	}
	id = resp.GetMember().GetUserId()
	return id, env.Identity.UserToken(t, tenant.ID, id, launch.Audience, "bulkhead.vaultbroker")
}

func newWorld(t *testing.T) *world {
	env := connectiontest.Start(t, connectiontest.Options{})
	w := &world{env: env, c: clients{conns: env.Connections(t, 0), ints: env.Integrations(t, 0), events: env.Events(t, 0), offb: env.Offboarding(t, 0)}}
	w.a, w.b = env.NewTenant(t, "a"), env.NewTenant(t, "b")
	w.aOwner, w.bOwner = env.Identity.Token(t, w.a.OwnerKey), env.Identity.Token(t, w.b.OwnerKey)
	w.bYID, w.bY = addMember(t, env, w.bOwner, w.b, "y@b.example", identityv1.Role_ROLE_MEMBER)
	_, w.bZ = addMember(t, env, w.bOwner, w.b, "z@b.example", identityv1.Role_ROLE_MEMBER)
	_, w.bViewer = addMember(t, env, w.bOwner, w.b, "v@b.example", identityv1.Role_ROLE_VIEWER)
	w.syncToken = env.Identity.ServiceToken(t, "sync")
	w.bOrg = env.Authorize(t, as(t, w.bOwner), 0, &connectionv1.StartAuthorizationRequest{TenantId: w.b.ID, Integration: connectiontest.OAuthOrg})
	w.bUser = env.Authorize(t, as(t, w.bY), 0, &connectionv1.StartAuthorizationRequest{TenantId: w.b.ID, Integration: connectiontest.OAuthUser})
	return w
}

// ctxFor is how each principal calls: through the sync service's hop, as GetAccessToken needs
// for users (the other RPCs accept it too), so one context serves every RPC.
func (w *world) ctxFor(t *testing.T, token string) context.Context {
	return viaService(t, token, w.syncToken)
}

// TestCrossTenant: tenant A's owner gets NotFound for B's tenant and connections — exactly the
// answer for ones that do not exist — on every RPC, and B is unchanged afterwards.
func TestCrossTenant(t *testing.T) {
	w := newWorld(t)
	cs := calls()
	for _, method := range connectionMethods(t) {
		call, ok := cs[method]
		if !ok {
			t.Errorf("%s has no cross-tenant call: add one to calls()", method)
			continue
		}
		t.Run(strings.TrimPrefix(method, "/bulkhead.connection.v1."), func(t *testing.T) {
			check := func(to, absent target) {
				t.Helper()
				if servicesOnly[method] {
					for _, tgt := range []target{to, absent} {
						if err := call(w.ctxFor(t, w.aOwner), w.c, tgt); status.Code(err) != codes.PermissionDenied {
							t.Fatalf("A's call %+v: %v, want PermissionDenied", tgt, err)
						}
					}
					return
				}
				errB := call(w.ctxFor(t, w.aOwner), w.c, to)
				if code := status.Code(errB); code != codes.NotFound {
					t.Fatalf("A's call on B %+v: %v, want NotFound", to, errB)
				}
				errMissing := call(w.ctxFor(t, w.aOwner), w.c, absent)
				sb, _ := status.FromError(errB)
				sm, _ := status.FromError(errMissing)
				if !proto.Equal(sb.Proto(), sm.Proto()) {
					t.Fatalf("answer for B's resource differs from a missing one:\n B:       %v\n missing: %v", sb.Proto(), sm.Proto())
				}
			}
			for _, conn := range []string{w.bOrg, w.bUser} {
				check(target{TenantID: w.b.ID, ConnectionID: conn}, target{TenantID: uuid.NewString(), ConnectionID: uuid.NewString()})
				if perConnection[method] {
					check(target{TenantID: w.a.ID, ConnectionID: conn}, target{TenantID: w.a.ID, ConnectionID: uuid.NewString()})
				}
			}
		})
	}

	// B is untouched: both connections active and usable, its integration still enabled.
	for _, tc := range []struct{ token, conn string }{{w.bOwner, w.bOrg}, {w.bY, w.bUser}} {
		got, err := w.c.conns.GetConnection(as(t, tc.token), &connectionv1.GetConnectionRequest{TenantId: w.b.ID, ConnectionId: tc.conn})
		if err != nil || got.GetConnection().GetStatus() != connectionv1.ConnectionStatus_CONNECTION_STATUS_ACTIVE {
			t.Fatalf("B's connection after the attack: %v, %v", got, err)
		}
		if _, err := w.c.conns.GetAccessToken(w.ctxFor(t, tc.token), &connectionv1.GetAccessTokenRequest{TenantId: w.b.ID, ConnectionId: tc.conn}); err != nil {
			t.Fatalf("B's connection no longer usable: %v", err)
		}
	}
	in, err := w.c.ints.GetIntegration(as(t, w.bOwner), &connectionv1.GetIntegrationRequest{TenantId: w.b.ID, Integration: connectiontest.OAuthOrg})
	if err != nil || !in.GetIntegration().GetSettings().GetEnabled() {
		t.Fatalf("B's integration after the attack: %v, %v", in, err)
	}
}

// userCase is what one principal of B gets from one RPC on y's user-level connection.
type userCase struct {
	who  string
	want codes.Code
}

// TestCrossUser: inside one tenant, y's user-level connection is y's: another member cannot
// see, use, change or re-authorize it; an admin sees its metadata and may disable or revoke
// it, but never use it (NotFound, as if it did not exist) nor re-authorize it.
func TestCrossUser(t *testing.T) {
	w := newWorld(t)
	tokens := map[string]string{"owner y": w.bY, "member z": w.bZ, "admin": w.bOwner, "viewer": w.bViewer}
	// Read-only and refused calls first; the admin's disable and revoke run last (below).
	table := map[string][]userCase{
		connectionv1.ConnectionService_CreateCredentialConnection_FullMethodName: {
			// Names no connection: the test integration is org-level, which members may not create.
			{"member z", codes.PermissionDenied}, {"viewer", codes.PermissionDenied},
		},
		connectionv1.ConnectionService_StartAuthorization_FullMethodName: {
			{"member z", codes.NotFound}, {"admin", codes.PermissionDenied}, {"viewer", codes.PermissionDenied}, {"owner y", codes.OK},
		},
		connectionv1.ConnectionService_GetConnection_FullMethodName: {
			{"member z", codes.NotFound}, {"viewer", codes.NotFound}, {"admin", codes.OK}, {"owner y", codes.OK},
		},
		connectionv1.ConnectionService_ListConnections_FullMethodName: {
			{"member z", codes.NotFound}, {"viewer", codes.NotFound}, {"admin", codes.OK}, {"owner y", codes.OK},
		},
		connectionv1.ConnectionService_GetAccessToken_FullMethodName: {
			{"member z", codes.NotFound}, {"admin", codes.NotFound}, {"viewer", codes.PermissionDenied}, {"owner y", codes.OK},
		},
		connectionv1.ConnectionService_Proxy_FullMethodName: {
			{"member z", codes.NotFound}, {"admin", codes.NotFound}, {"viewer", codes.PermissionDenied}, {"owner y", codes.OK},
		},
		connectionv1.ConnectionService_SetConnectionEnabled_FullMethodName: {
			{"member z", codes.NotFound}, {"viewer", codes.PermissionDenied},
		},
		connectionv1.ConnectionService_RevokeConnection_FullMethodName: {
			{"member z", codes.NotFound}, {"viewer", codes.PermissionDenied},
		},
		connectionv1.ConnectionService_DeleteConnection_FullMethodName: {
			{"member z", codes.NotFound}, {"viewer", codes.PermissionDenied},
		},
		connectionv1.EventService_ListEvents_FullMethodName: {
			// Services only: no tenant principal reads the outbox, admins included.
			{"member z", codes.PermissionDenied}, {"viewer", codes.PermissionDenied}, {"admin", codes.PermissionDenied}, {"owner y", codes.PermissionDenied},
		},
		connectionv1.TenantOffboardingService_OffboardTenant_FullMethodName: {
			// Identity's saga only: no tenant principal offboards a tenant, its owner included.
			{"member z", codes.PermissionDenied}, {"viewer", codes.PermissionDenied}, {"admin", codes.PermissionDenied}, {"owner y", codes.PermissionDenied},
		},
		connectionv1.IntegrationService_ListIntegrations_FullMethodName: {
			{"member z", codes.OK}, {"viewer", codes.OK},
		},
		connectionv1.IntegrationService_GetIntegration_FullMethodName: {
			{"member z", codes.OK}, {"viewer", codes.OK},
		},
		connectionv1.IntegrationService_UpdateIntegrationSettings_FullMethodName: {
			// Integration settings are the admins': members and viewers may not change them.
			{"member z", codes.PermissionDenied}, {"owner y", codes.PermissionDenied}, {"viewer", codes.PermissionDenied},
		},
	}
	cs := calls()
	to := target{TenantID: w.b.ID, ConnectionID: w.bUser}
	for _, method := range connectionMethods(t) {
		rows, ok := table[method]
		if !ok {
			t.Errorf("%s has no cross-user case: add one to the table", method)
			continue
		}
		for _, row := range rows {
			t.Run(strings.TrimPrefix(method, "/bulkhead.connection.v1.")+"/"+row.who, func(t *testing.T) {
				err := cs[method](w.ctxFor(t, tokens[row.who]), w.c, to)
				if got := status.Code(err); got != row.want {
					t.Fatalf("%s: %v, want %v", row.who, err, row.want)
				}
			})
		}
	}

	// Org-level connections: members use them but do not manage them.
	org := target{TenantID: w.b.ID, ConnectionID: w.bOrg}
	for method, want := range map[string]codes.Code{
		connectionv1.ConnectionService_GetAccessToken_FullMethodName:       codes.OK,
		connectionv1.ConnectionService_Proxy_FullMethodName:                codes.OK,
		connectionv1.ConnectionService_GetConnection_FullMethodName:        codes.OK,
		connectionv1.ConnectionService_SetConnectionEnabled_FullMethodName: codes.PermissionDenied,
		connectionv1.ConnectionService_RevokeConnection_FullMethodName:     codes.PermissionDenied,
		connectionv1.ConnectionService_DeleteConnection_FullMethodName:     codes.PermissionDenied,
	} {
		if err := cs[method](w.ctxFor(t, w.bZ), w.c, org); status.Code(err) != want {
			t.Errorf("member z, %s on the org connection: %v, want %v", method, err, want)
		}
	}
	_, err := w.c.conns.StartAuthorization(w.ctxFor(t, w.bZ), &connectionv1.StartAuthorizationRequest{TenantId: w.b.ID, Integration: connectiontest.OAuthOrg, ConnectionId: w.bOrg})
	wantCode(t, err, codes.PermissionDenied)
	// A user's token straight from a browser, without a Bulkhead service hop, gets no token.
	_, err = w.c.conns.GetAccessToken(as(t, w.bY), &connectionv1.GetAccessTokenRequest{TenantId: w.b.ID, ConnectionId: w.bUser})
	wantCode(t, err, codes.PermissionDenied)

	// The admin can disable and revoke y's connection; y sees the effect.
	useY := func() error {
		_, err := w.c.conns.GetAccessToken(w.ctxFor(t, w.bY), &connectionv1.GetAccessTokenRequest{TenantId: w.b.ID, ConnectionId: w.bUser})
		return err
	}
	if err := cs[connectionv1.ConnectionService_SetConnectionEnabled_FullMethodName](w.ctxFor(t, w.bOwner), w.c, to); err != nil {
		t.Fatalf("admin disables y's connection: %v", err)
	}
	wantReason(t, useY(), codes.FailedPrecondition, "CONNECTION_DISABLED")
	if _, err := w.c.conns.SetConnectionEnabled(w.ctxFor(t, w.bY), &connectionv1.SetConnectionEnabledRequest{TenantId: w.b.ID, ConnectionId: w.bUser, Enabled: true}); err != nil {
		t.Fatalf("y re-enables: %v", err)
	}
	if err := useY(); err != nil {
		t.Fatal(err)
	}
	if err := cs[connectionv1.ConnectionService_RevokeConnection_FullMethodName](w.ctxFor(t, w.bOwner), w.c, to); err != nil {
		t.Fatalf("admin revokes y's connection: %v", err)
	}
	wantReason(t, useY(), codes.FailedPrecondition, "CONNECTION_REVOKED")
	// The org connection is unaffected.
	if err := cs[connectionv1.ConnectionService_GetAccessToken_FullMethodName](w.ctxFor(t, w.bY), w.c, org); err != nil {
		t.Fatalf("org connection after y's was revoked: %v", err)
	}
	// The admin may delete y's (revoked) connection too; then neither sees it, and the org
	// connection is still unaffected.
	if err := cs[connectionv1.ConnectionService_DeleteConnection_FullMethodName](w.ctxFor(t, w.bOwner), w.c, to); err != nil {
		t.Fatalf("admin deletes y's connection: %v", err)
	}
	wantCode(t, useY(), codes.NotFound)
	if err := cs[connectionv1.ConnectionService_GetConnection_FullMethodName](w.ctxFor(t, w.bOwner), w.c, to); status.Code(err) != codes.NotFound {
		t.Fatalf("admin gets y's deleted connection: %v, want NotFound", err)
	}
	if err := cs[connectionv1.ConnectionService_GetAccessToken_FullMethodName](w.ctxFor(t, w.bY), w.c, org); err != nil {
		t.Fatalf("org connection after y's was deleted: %v", err)
	}
}
