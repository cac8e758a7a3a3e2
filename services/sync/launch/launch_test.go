package launch_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	syncv1 "github.com/bulkhead/bulkhead/gen/bulkhead/sync/v1"
	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/pkg/providertest"
	"github.com/bulkhead/bulkhead/pkg/testenv"
	"github.com/bulkhead/bulkhead/services/identity/identitytest"
	"github.com/bulkhead/bulkhead/services/sync/internal/engine"
	"github.com/bulkhead/bulkhead/services/sync/internal/store"
	"github.com/bulkhead/bulkhead/services/sync/launch"
	"github.com/bulkhead/bulkhead/services/sync/migrations"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func testCtx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// providerTokens hands out real client-credentials tokens of the test provider, one OAuth2
// client (= provider account) per connection. It stands where the connection service's
// GetAccessToken will.
type providerTokens struct {
	mu    sync.Mutex
	confs map[string]*clientcredentials.Config
}

func (pt *providerTokens) AccessToken(ctx context.Context, tenantID, connectionID string) (string, error) {
	pt.mu.Lock()
	conf, ok := pt.confs[tenantID+"/"+connectionID]
	pt.mu.Unlock()
	if !ok {
		return "", fmt.Errorf("no such connection")
	}
	tok, err := conf.Token(ctx)
	if err != nil {
		return "", err
	}
	return tok.AccessToken, nil
}

type harness struct {
	id       *identitytest.Identity
	svc      *launch.Running
	client   syncv1.SyncServiceClient
	conn     *grpc.ClientConn
	p        *providertest.Provider
	tokens   *providerTokens
	finished chan string // sync ids whose run finished
	db       *testenv.Database
}

func start(t *testing.T, mods ...func(*launch.Options)) *harness {
	t.Helper()
	return startOn(t, identitytest.Start(t, identitytest.Options{}),
		providertest.New(t, providertest.Options{API: providertest.APIOptions{MaxPageSize: 10}}), nil, mods...)
}

// startOn starts the sync service against identity id and provider p; configure may change
// its configuration.
func startOn(t *testing.T, id *identitytest.Identity, p *providertest.Provider, configure func(*launch.Config), mods ...func(*launch.Options)) *harness {
	t.Helper()
	h := &harness{
		id:       id,
		p:        p,
		tokens:   &providerTokens{confs: map[string]*clientcredentials.Config{}},
		finished: make(chan string, 100),
	}
	db := testenv.NewDatabase(t, testenv.DBSpec{Name: "sync", Migrations: migrations.FS})
	h.db = db
	cfg := launch.DefaultConfig()
	cfg.GRPCAddr = "127.0.0.1:0"
	cfg.DatabaseURL = launch.Secret(db.AppURL)
	cfg.MigrateDatabaseURL = launch.Secret(db.OwnerURL)
	cfg.AppRole = db.Roles.App
	cfg.IdentityAddr, cfg.IdentityJWKSURL, cfg.Issuer = h.id.GRPCAddr, h.id.JWKSURL, h.id.Issuer
	cfg.ClientSecret = launch.Secret(h.id.PlatformSecret("sync"))
	cfg.TenantStatusTTL = 100 * time.Millisecond
	cfg.RateLimit, cfg.RateBurst = 1e6, 1e6
	cfg.BaseURLs = map[string]string{"providertest": h.p.URL}
	cfg.WatchKeepAlive = 200 * time.Millisecond
	opts := launch.Options{
		Tokens: h.tokens,
		Engine: func(c *engine.Config) {
			c.FetchPollInterval = 50 * time.Millisecond
			c.Hooks.RunFinished = func(_, syncID string, _ int64) { h.finished <- syncID }
		},
	}
	if configure != nil {
		configure(&cfg)
	}
	for _, mod := range mods {
		mod(&opts)
	}
	svc, err := launch.Start(testCtx(t), cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := svc.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	h.svc = svc
	conn, err := grpc.NewClient(svc.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	h.client, h.conn = syncv1.NewSyncServiceClient(conn), conn
	return h
}

// connect makes a connection for tenantID backed by a fresh provider account.
func (h *harness) connect(t *testing.T, tenantID string) (connectionID, account string) {
	t.Helper()
	connectionID, account = uuid.NewString(), "acct-"+uuid.NewString()[:8]
	if err := h.p.RegisterClient(account, account+"-secret", nil, nil); err != nil {
		t.Fatal(err)
	}
	h.tokens.mu.Lock()
	h.tokens.confs[tenantID+"/"+connectionID] = &clientcredentials.Config{
		ClientID: account, ClientSecret: account + "-secret", TokenURL: h.p.TokenURL(), AuthStyle: oauth2.AuthStyleInHeader,
	}
	h.tokens.mu.Unlock()
	return connectionID, account
}

func (h *harness) waitFinished(t *testing.T, syncID string) {
	t.Helper()
	for {
		select {
		case id := <-h.finished:
			if id == syncID {
				return
			}
		case <-testCtx(t).Done():
			t.Fatalf("sync %s never finished a run", syncID)
		}
	}
}

func as(t *testing.T, token string) context.Context {
	return identitytest.WithToken(testCtx(t), token)
}

func listAll(t *testing.T, ctx context.Context, c syncv1.SyncServiceClient, tenant, conn, cursor string) ([]*syncv1.Record, string) {
	t.Helper()
	var out []*syncv1.Record
	for {
		resp, err := c.ListRecords(ctx, &syncv1.ListRecordsRequest{TenantId: tenant, ConnectionId: conn, Model: "records", Cursor: cursor, PageSize: 7})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, resp.GetRecords()...)
		cursor = resp.GetNextCursor()
		if !resp.GetHasMore() {
			return out, cursor
		}
	}
}

func TestSyncOverGRPC(t *testing.T) {
	h := start(t)
	a := h.id.CreateTenant(t, "alpha")
	tokA := h.id.Token(t, a.OwnerKey)
	connA, accountA := h.connect(t, a.ID)
	ctxA := as(t, tokA)

	started, err := h.client.StartSync(ctxA, &syncv1.StartSyncRequest{TenantId: a.ID, ConnectionId: connA, Integration: "providertest", Model: "records"})
	if err != nil {
		t.Fatal(err)
	}
	h.waitFinished(t, started.GetSync().GetSyncId())
	st, err := h.client.GetSyncStatus(ctxA, &syncv1.GetSyncStatusRequest{TenantId: a.ID, ConnectionId: connA, Model: "records"})
	if err != nil {
		t.Fatal(err)
	}
	if lr := st.GetSync().GetLastRun(); lr.GetStatus() != syncv1.RunStatus_RUN_STATUS_SUCCEEDED || lr.GetAdded() != 25 || st.GetSync().GetCheckpoint() == "" {
		t.Fatalf("status = %v", st.GetSync())
	}
	recs, cursor := listAll(t, ctxA, h.client, a.ID, connA, "")
	if len(recs) != 25 {
		t.Fatalf("ListRecords = %d records, want 25", len(recs))
	}

	// A stream from the current cursor sees the next change as it commits.
	wctx, cancelWatch := context.WithCancel(ctxA)
	defer cancelWatch()
	stream, err := h.client.WatchChanges(wctx, &syncv1.WatchChangesRequest{TenantId: a.ID, Cursor: cursor})
	if err != nil {
		t.Fatal(err)
	}
	changed, err := h.p.PutRecord(accountA, h.p.Records(accountA)[0].ID, map[string]string{"name": "changed"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.client.TriggerSync(ctxA, &syncv1.TriggerSyncRequest{TenantId: a.ID, ConnectionId: connA, Model: "records"}); err != nil {
		t.Fatal(err)
	}
	for {
		msg, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if len(msg.GetRecords()) == 0 {
			continue // keep-alive
		}
		if r := msg.GetRecords()[0]; len(msg.GetRecords()) != 1 || r.GetExternalId() != changed.ID || r.GetAction() != syncv1.ChangeAction_CHANGE_ACTION_UPDATED {
			t.Fatalf("watched %v, want the one update of %s", msg.GetRecords(), changed.ID)
		}
		break
	}
	// The feed from the old cursor has exactly that change.
	if recs, _ := listAll(t, ctxA, h.client, a.ID, connA, cursor); len(recs) != 1 || recs[0].GetExternalId() != changed.ID {
		t.Fatalf("feed after the change = %v", recs)
	}
}

// TestCrossTenant: tenant B's token cannot list, watch, trigger or otherwise reach A's syncs or
// records, whether it names A's tenant or its own.
func TestCrossTenant(t *testing.T) {
	h := start(t)
	a, b := h.id.CreateTenant(t, "alpha"), h.id.CreateTenant(t, "bravo")
	tokA, tokB := h.id.Token(t, a.OwnerKey), h.id.Token(t, b.OwnerKey)
	connA, _ := h.connect(t, a.ID)
	started, err := h.client.StartSync(as(t, tokA), &syncv1.StartSyncRequest{TenantId: a.ID, ConnectionId: connA, Integration: "providertest", Model: "records"})
	if err != nil {
		t.Fatal(err)
	}
	h.waitFinished(t, started.GetSync().GetSyncId())

	for _, tenant := range []string{a.ID, b.ID} {
		ctxB := as(t, tokB)
		calls := map[string]func() error{
			"GetSyncStatus": func() error {
				_, err := h.client.GetSyncStatus(ctxB, &syncv1.GetSyncStatusRequest{TenantId: tenant, ConnectionId: connA, Model: "records"})
				return err
			},
			"ListRecords": func() error {
				_, err := h.client.ListRecords(ctxB, &syncv1.ListRecordsRequest{TenantId: tenant, ConnectionId: connA, Model: "records"})
				return err
			},
			"TriggerSync": func() error {
				_, err := h.client.TriggerSync(ctxB, &syncv1.TriggerSyncRequest{TenantId: tenant, ConnectionId: connA, Model: "records"})
				return err
			},
			"PauseSync": func() error {
				_, err := h.client.PauseSync(ctxB, &syncv1.PauseSyncRequest{TenantId: tenant, ConnectionId: connA, Model: "records"})
				return err
			},
			"ResumeSync": func() error {
				_, err := h.client.ResumeSync(ctxB, &syncv1.ResumeSyncRequest{TenantId: tenant, ConnectionId: connA, Model: "records"})
				return err
			},
			"WatchChanges": func() error {
				s, err := h.client.WatchChanges(ctxB, &syncv1.WatchChangesRequest{TenantId: tenant, ConnectionId: connA, Model: "records"})
				if err != nil {
					return err
				}
				_, err = s.Recv()
				return err
			},
		}
		for name, call := range calls {
			t.Run(name+"/naming "+map[bool]string{true: "A", false: "B"}[tenant == a.ID], func(t *testing.T) {
				if err := call(); status.Code(err) != codes.NotFound {
					t.Fatalf("%s = %v, want NotFound", name, err)
				}
			})
		}
	}
	// B's own views are empty: no sync listed, and a tenant-wide watch carries only keep-alives.
	ctxB := as(t, tokB)
	list, err := h.client.ListSyncs(ctxB, &syncv1.ListSyncsRequest{TenantId: b.ID})
	if err != nil || len(list.GetSyncs()) != 0 {
		t.Fatalf("B's ListSyncs = %v, %v", list.GetSyncs(), err)
	}
	stream, err := h.client.WatchChanges(ctxB, &syncv1.WatchChangesRequest{TenantId: b.ID})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stream.Recv()
	if err != nil || len(msg.GetRecords()) != 0 {
		t.Fatalf("B's tenant-wide watch = %v, %v; want a keep-alive", msg.GetRecords(), err)
	}
	// A's sync is untouched by B's attempts.
	st, err := h.client.GetSyncStatus(as(t, tokA), &syncv1.GetSyncStatusRequest{TenantId: a.ID, ConnectionId: connA, Model: "records"})
	if err != nil || st.GetSync().GetState() != syncv1.SyncState_SYNC_STATE_ACTIVE {
		t.Fatalf("A's sync after B's attempts = %v, %v", st.GetSync(), err)
	}
	// No credentials at all.
	if _, err := h.client.ListSyncs(testCtx(t), &syncv1.ListSyncsRequest{TenantId: a.ID}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("anonymous ListSyncs = %v", err)
	}
}

// TestSuspendedTenantsJobsAreCancelled: once identity's kill switch is on, the tenant's API
// calls are refused and its scheduled runs are cancelled before reaching the provider.
func TestSuspendedTenantsJobsAreCancelled(t *testing.T) {
	h := start(t)
	a := h.id.CreateTenant(t, "alpha")
	tokA := h.id.Token(t, a.OwnerKey)
	connA, _ := h.connect(t, a.ID)
	started, err := h.client.StartSync(as(t, tokA), &syncv1.StartSyncRequest{TenantId: a.ID, ConnectionId: connA, Integration: "providertest", Model: "records"})
	if err != nil {
		t.Fatal(err)
	}
	h.waitFinished(t, started.GetSync().GetSyncId())

	op := identitytest.WithToken(testCtx(t), h.id.OperatorToken(t))
	if _, err := identityv1.NewTenantServiceClient(h.id.Conn(t)).SuspendTenant(op, &identityv1.SuspendTenantRequest{TenantId: a.ID, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	// The API refuses A (within the status cache's TTL).
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := h.client.ListSyncs(as(t, tokA), &syncv1.ListSyncsRequest{TenantId: a.ID})
		if status.Code(err) == codes.PermissionDenied {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("suspended tenant's call = %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A run that comes due (the scheduler, not the API) is cancelled, and nothing reaches the
	// provider.
	events, cancel := h.svc.Engine.River().Subscribe(river.EventKindJobCancelled, river.EventKindJobCompleted)
	defer cancel()
	before := len(h.p.APIRequests())
	triggered, err := h.svc.Engine.TriggerSync(testCtx(t), pgtenant.Scope{TenantID: a.ID}, connA, "records", false)
	if err != nil {
		t.Fatal(err)
	}
	for done := false; !done; {
		select {
		case ev := <-events:
			if ev.Job.ID != *triggered.JobID {
				continue // the first run's job completing, or the reconciler's periodic job
			}
			if ev.Kind != river.EventKindJobCancelled || ev.Job.State != rivertype.JobStateCancelled {
				t.Fatalf("job event %s (%s) id %d errors %v attempt %d, want cancelled; provider requests %d -> %d", ev.Kind, ev.Job.State, ev.Job.ID, ev.Job.Errors, ev.Job.Attempt, before, len(h.p.APIRequests()))
			}
			done = true
		case <-testCtx(t).Done():
			t.Fatal("the suspended tenant's job was not cancelled")
		}
	}
	if n := len(h.p.APIRequests()); n != before {
		t.Fatalf("%d requests reached the provider for a suspended tenant", n-before)
	}
	// The sync is parked, so the reconciler does not bring the job back at every pass.
	var parked *store.Sync
	err = h.svc.Engine.DB().InTx(testCtx(t), pgtenant.Scope{TenantID: a.ID}, func(tx pgx.Tx) error {
		var err error
		parked, err = store.GetSync(testCtx(t), tx, a.ID, connA, "records", false)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if parked.JobID != nil || parked.NextRunAt == nil || time.Until(*parked.NextRunAt) < 30*time.Minute {
		t.Fatalf("suspended tenant's sync: job %v next run %v", parked.JobID, parked.NextRunAt)
	}
}

// TestReflectionIsPublic: grpcurl can list the API without a token (it only describes the
// published protos); every other method still needs one.
func TestReflectionIsPublic(t *testing.T) {
	h := start(t)
	stream, err := reflectionpb.NewServerReflectionClient(h.conn).ServerReflectionInfo(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("reflection without a token: %v", err)
	}
	found := false
	for _, s := range resp.GetListServicesResponse().GetService() {
		found = found || s.GetName() == syncv1.SyncService_ServiceDesc.ServiceName
	}
	if !found {
		t.Fatalf("services = %v, want %s", resp.GetListServicesResponse().GetService(), syncv1.SyncService_ServiceDesc.ServiceName)
	}
	_, err = h.client.ListSyncs(testCtx(t), &syncv1.ListSyncsRequest{})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("ListSyncs without a token = %v, want UNAUTHENTICATED", err)
	}
}
