package engine_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/pkg/providertest"
	"github.com/bulkhead/bulkhead/pkg/testenv"
	"github.com/bulkhead/bulkhead/services/sync/internal/definition"
	"github.com/bulkhead/bulkhead/services/sync/internal/engine"
	"github.com/bulkhead/bulkhead/services/sync/internal/fetch"
	"github.com/bulkhead/bulkhead/services/sync/internal/store"
	"github.com/bulkhead/bulkhead/services/sync/migrations"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var spec = testenv.DBSpec{Name: "sync", Migrations: migrations.FS}

func testCtx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// providerTokens hands out real access tokens from the test provider's OAuth2 server
// (client-credentials grant), one OAuth2 client per connection; the client's id is the
// provider account whose records the API serves.
type providerTokens struct {
	p     *providertest.Provider
	mu    sync.Mutex
	confs map[string]*clientcredentials.Config // tenant/connection → client
	calls atomic.Int64
}

func (pt *providerTokens) AccessToken(ctx context.Context, tenantID, connectionID string) (string, error) {
	pt.calls.Add(1)
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

// env is a migrated database (River included) and a provider.
type env struct {
	db     *testenv.Database
	p      *providertest.Provider
	tokens *providerTokens
	defs   *definition.Set
	// breakerFailures overrides fetch's breaker threshold (0: the test default).
	breakerFailures uint32
}

func newEnv(t testing.TB, opts providertest.Options) *env {
	t.Helper()
	db := testenv.NewDatabase(t, spec)
	if err := migrations.Apply(testCtx(t), db.OwnerURL, db.Roles.App, nil); err != nil {
		t.Fatal(err)
	}
	p := providertest.New(t, opts)
	defs, err := definition.Load()
	if err != nil {
		t.Fatal(err)
	}
	return &env{db: db, p: p, tokens: &providerTokens{p: p, confs: map[string]*clientcredentials.Config{}}, defs: defs}
}

// connect makes a connection for tenant: a fresh OAuth2 client (= provider account).
func (e *env) connect(t testing.TB, tenant pgtenant.Scope) (connectionID, account string) {
	t.Helper()
	connectionID, account = uuid.NewString(), "acct-"+uuid.NewString()[:8]
	if err := e.p.RegisterClient(account, account+"-secret", nil, []string{"records.read"}); err != nil {
		t.Fatal(err)
	}
	e.tokens.mu.Lock()
	e.tokens.confs[tenant.TenantID+"/"+connectionID] = &clientcredentials.Config{
		ClientID: account, ClientSecret: account + "-secret", TokenURL: e.p.TokenURL(),
		Scopes: []string{"records.read"}, AuthStyle: oauth2.AuthStyleInHeader,
	}
	e.tokens.mu.Unlock()
	return connectionID, account
}

// quickRetry retries failed attempts after 50ms, so tests do not wait River's backoff.
type quickRetry struct{}

func (quickRetry) NextRetry(*rivertype.JobRow) time.Time {
	return time.Now().Add(50 * time.Millisecond)
}

// signals collects an engine's hooks.
type signals struct {
	finished chan finished
}

type finished struct {
	tenant, sync string
	run          int64
}

// engine starts an engine (its own pool: a separate worker) and stops it when the test ends.
func (e *env) engine(t testing.TB, mod func(*engine.Config)) (*engine.Engine, *signals) {
	t.Helper()
	f, err := fetch.New(fetch.Config{Backoff: 10 * time.Millisecond, MaxInlineWait: 3 * time.Second, Rate: 1000, Burst: 1000, BreakerFailures: e.breakerFailures})
	if err != nil {
		t.Fatal(err)
	}
	sig := &signals{finished: make(chan finished, 100)}
	cfg := engine.Config{
		Pool: e.db.AppPool(t), Definitions: e.defs, Fetcher: f, Tokens: e.tokens,
		BaseURLs:          map[string]string{"providertest": e.p.URL},
		FetchPollInterval: 50 * time.Millisecond,
		FairnessSnooze:    50 * time.Millisecond,
		RetryPolicy:       quickRetry{},
		SoftStopTimeout:   time.Second,
		Hooks: engine.Hooks{RunFinished: func(tenant, syncID string, run int64) {
			sig.finished <- finished{tenant, syncID, run}
		}},
	}
	if mod != nil {
		mod(&cfg)
	}
	en, err := engine.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := en.Start(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = en.Stop(ctx)
	})
	return en, sig
}

// waitRun waits for run of syncID to finish.
func (s *signals) waitRun(t *testing.T, syncID string, run int64) {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case f := <-s.finished:
			if f.sync == syncID && f.run == run {
				return
			}
		case <-timeout:
			t.Fatalf("run %d of sync %s did not finish", run, syncID)
		}
	}
}

// waitAll waits for a run of each of syncIDs to finish.
func (s *signals) waitAll(t *testing.T, syncIDs ...string) {
	t.Helper()
	left := map[string]bool{}
	for _, id := range syncIDs {
		left[id] = true
	}
	timeout := time.After(time.Minute)
	for len(left) > 0 {
		select {
		case f := <-s.finished:
			delete(left, f.sync)
		case <-timeout:
			t.Fatalf("syncs %v did not finish a run", slices.Collect(maps.Keys(left)))
		}
	}
}

// current returns every record of the sync that is not deleted: id → canonical payload.
func current(t *testing.T, db *pgtenant.DB, scope pgtenant.Scope, s *store.Sync) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, r := range feed(t, db, scope, s, 0) {
		if r.Action != store.ActionDeleted {
			out[r.ExternalID] = canonical(t, r.Payload)
		}
	}
	return out
}

func feed(t *testing.T, db *pgtenant.DB, scope pgtenant.Scope, s *store.Sync, after int64) []store.Record {
	t.Helper()
	var out []store.Record
	err := db.InTx(testCtx(t), scope, func(tx pgx.Tx) error {
		var err error
		out, err = store.ListFeed(testCtx(t), tx, scope.TenantID, store.FeedQuery{ConnectionID: s.ConnectionID, Model: s.Model, After: after, Limit: 10_000})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func getSync(t *testing.T, db *pgtenant.DB, scope pgtenant.Scope, s *store.Sync) *store.Sync {
	t.Helper()
	var out *store.Sync
	err := db.InTx(testCtx(t), scope, func(tx pgx.Tx) error {
		var err error
		out, err = store.GetSync(testCtx(t), tx, scope.TenantID, s.ConnectionID, s.Model, false)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// providerRecords is what a complete sync of account must hold: id → canonical payload.
func providerRecords(t *testing.T, p *providertest.Provider, account string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, r := range p.Records(account) {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		out[r.ID] = canonical(t, b)
	}
	return out
}

func canonical(t *testing.T, b []byte) string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func assertSameRecords(t *testing.T, got, want map[string]string) {
	t.Helper()
	if !maps.Equal(got, want) {
		gk, wk := slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want))
		t.Fatalf("synced records differ from the provider's:\n got %d %v\nwant %d %v", len(gk), gk, len(wk), wk)
	}
}

func actions(rs []store.Record) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.ExternalID + ":" + string(r.Action)
	}
	slices.Sort(out)
	return out
}

func TestIncrementalSync(t *testing.T) {
	e := newEnv(t, providertest.Options{API: providertest.APIOptions{MaxPageSize: 7}})
	en, sig := e.engine(t, nil)
	tenant := testenv.NewTenant()
	conn, account := e.connect(t, tenant)

	s, err := en.StartSync(testCtx(t), tenant, engine.StartSpec{ConnectionID: conn, Integration: "providertest", Model: "records"})
	if err != nil {
		t.Fatal(err)
	}
	if s.Mode != store.ModeIncremental {
		t.Fatalf("default mode = %s, want incremental", s.Mode)
	}
	sig.waitRun(t, s.ID, 1)
	assertSameRecords(t, current(t, en.DB(), tenant, s), providerRecords(t, e.p, account))
	st := getSync(t, en.DB(), tenant, s)
	if st.Last.Status != store.RunSucceeded || st.Last.Added != 25 || st.Last.Pages != 4 || st.Checkpoint == nil {
		t.Fatalf("after run 1: last = %+v checkpoint = %v", st.Last, st.Checkpoint)
	}
	cursor := feed(t, en.DB(), tenant, s, 0)[24].Seq

	// Changes at the provider: one updated, one added, one deleted.
	recs := e.p.Records(account)
	if _, err := e.p.PutRecord(account, recs[3].ID, map[string]string{"name": "renamed"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.p.PutRecord(account, "new-1", map[string]string{"name": "new"}); err != nil {
		t.Fatal(err)
	}
	e.p.DeleteRecord(account, recs[5].ID)
	before := len(e.p.APIRequests())
	if _, err := en.TriggerSync(testCtx(t), tenant, conn, "records", false); err != nil {
		t.Fatal(err)
	}
	sig.waitRun(t, s.ID, 2)
	// The incremental run asked only for what changed since the checkpoint…
	for _, r := range e.p.APIRequests()[before:] {
		q, _ := url.ParseQuery(r.RawQuery)
		if q.Get("updated_since") == "" {
			t.Fatalf("incremental request without updated_since: %s", r.RawQuery)
		}
	}
	// …and emitted exactly the update and the addition; the deletion needs a full run.
	want := []string{"new-1:added", recs[3].ID + ":updated"}
	slices.Sort(want)
	if got := actions(feed(t, en.DB(), tenant, s, cursor)); !slices.Equal(got, want) {
		t.Fatalf("incremental changes = %v", got)
	}
	st = getSync(t, en.DB(), tenant, s)
	if st.Last.Added != 1 || st.Last.Updated != 1 || st.Last.Deleted != 0 || st.Last.Full {
		t.Fatalf("run 2 = %+v", st.Last)
	}

	if _, err := en.TriggerSync(testCtx(t), tenant, conn, "records", true); err != nil {
		t.Fatal(err)
	}
	sig.waitRun(t, s.ID, 3)
	assertSameRecords(t, current(t, en.DB(), tenant, s), providerRecords(t, e.p, account))
	st = getSync(t, en.DB(), tenant, s)
	if !st.Last.Full || st.Last.Deleted != 1 || st.Last.Added+st.Last.Updated != 0 {
		t.Fatalf("full resync = %+v", st.Last)
	}
}

func TestFullSyncDetectsDeletesOnlyAfterTheRun(t *testing.T) {
	e := newEnv(t, providertest.Options{API: providertest.APIOptions{MaxPageSize: 5}})
	tenant := testenv.NewTenant()
	conn, account := e.connect(t, tenant)
	var (
		mu      sync.Mutex
		midRun  []store.Record
		syncRef *store.Sync
		checkDB *pgtenant.DB
	)
	en, sig := e.engine(t, func(c *engine.Config) {
		checkDB = pgtenant.New(c.Pool)
		c.Hooks.PageCommitted = func(ctx context.Context, tenantID, syncID string, run, page int64) {
			mu.Lock()
			defer mu.Unlock()
			if run == 2 && page == 1 {
				midRun = feed(t, checkDB, tenant, syncRef, 0)
			}
		}
	})
	s, err := en.StartSync(testCtx(t), tenant, engine.StartSpec{ConnectionID: conn, Integration: "providertest", Model: "records_linked", Mode: store.ModeFull})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	syncRef = s
	mu.Unlock()
	sig.waitRun(t, s.ID, 1)
	assertSameRecords(t, current(t, en.DB(), tenant, s), providerRecords(t, e.p, account))

	victim := e.p.Records(account)[0].ID
	e.p.DeleteRecord(account, victim)
	if _, err := en.TriggerSync(testCtx(t), tenant, conn, "records_linked", false); err != nil {
		t.Fatal(err)
	}
	sig.waitRun(t, s.ID, 2)
	mu.Lock()
	defer mu.Unlock()
	for _, r := range midRun {
		if r.Action == store.ActionDeleted {
			t.Fatalf("%s was marked deleted before the full run finished", r.ExternalID)
		}
	}
	if len(midRun) != 25 {
		t.Fatalf("mid-run feed has %d records, want 25", len(midRun))
	}
	assertSameRecords(t, current(t, en.DB(), tenant, s), providerRecords(t, e.p, account))
	st := getSync(t, en.DB(), tenant, s)
	if st.Last.Deleted != 1 || st.Last.Pages != 5 {
		t.Fatalf("run 2 = %+v", st.Last)
	}
	// Only records_linked used Link headers: every follow-up request came from one.
	for _, r := range e.p.APIRequests() {
		if r.Path != providertest.PathRecordsLinked {
			t.Fatalf("request to %s", r.Path)
		}
	}
}

// TestKilledWorkerResumes kills a worker between two pages of a run; a second worker (its own
// pool and River client) resumes the same run after the last committed page: no record lost or
// duplicated, and no committed page fetched again.
func TestKilledWorkerResumes(t *testing.T) {
	e := newEnv(t, providertest.Options{API: providertest.APIOptions{MaxPageSize: 5}})
	tenant := testenv.NewTenant()
	conn, account := e.connect(t, tenant)
	held := make(chan struct{})
	var once sync.Once
	en1, _ := e.engine(t, func(c *engine.Config) {
		c.Hooks.PageCommitted = func(ctx context.Context, _, _ string, run, page int64) {
			if page == 2 {
				once.Do(func() { close(held) })
				<-ctx.Done() // hold the run between pages until the worker is killed
			}
		}
	})
	s, err := en1.StartSync(testCtx(t), tenant, engine.StartSpec{ConnectionID: conn, Integration: "providertest", Model: "records", Mode: store.ModeFull})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-held:
	case <-testCtx(t).Done():
		t.Fatal("run never reached page 2")
	}
	if err := en1.Kill(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	st := getSync(t, en1.DB(), tenant, s)
	if st.Run.Status != store.RunRunning || st.Run.Pages != 2 || st.Position.PageCursor == "" {
		t.Fatalf("after the kill: run = %+v position = %+v", st.Run, st.Position)
	}
	if n := len(feed(t, en1.DB(), tenant, s, 0)); n != 10 {
		t.Fatalf("committed records after the kill = %d, want 10", n)
	}
	requestsBefore := len(e.p.APIRequests())

	_, sig2 := e.engine(t, nil)
	sig2.waitRun(t, s.ID, 1) // the same run, resumed
	assertSameRecords(t, current(t, en1.DB(), tenant, s), providerRecords(t, e.p, account))
	all := feed(t, en1.DB(), tenant, s, 0)
	if len(all) != 25 {
		t.Fatalf("feed has %d changes, want 25", len(all))
	}
	for _, r := range all {
		if r.Action != store.ActionAdded {
			t.Fatalf("%s: %s, want every record added exactly once", r.ExternalID, r.Action)
		}
	}
	st = getSync(t, en1.DB(), tenant, s)
	if st.Last.Number != 1 || st.Last.Added != 25 || st.Last.Pages != 5 {
		t.Fatalf("resumed run = %+v", st.Last)
	}
	// The second worker started at page 3: none of its requests is a first-page request.
	for _, r := range e.p.APIRequests()[requestsBefore:] {
		if q, _ := url.ParseQuery(r.RawQuery); q.Get("cursor") == "" {
			t.Fatalf("the resumed run fetched from the start: %s", r.RawQuery)
		}
	}
}

func TestProviderThrottlingAndFailures(t *testing.T) {
	e := newEnv(t, providertest.Options{API: providertest.APIOptions{MaxPageSize: 10}})
	en, sig := e.engine(t, nil)
	tenant := testenv.NewTenant()
	conn, account := e.connect(t, tenant)
	// The first request is throttled for a second (waited inside the call), the next two fail
	// with 503 (retried with backoff).
	e.p.ThrottleNextAPIRequests(account, 1, time.Second)
	e.p.FailNextAPIRequests(account, 2, 503)
	s, err := en.StartSync(testCtx(t), tenant, engine.StartSpec{ConnectionID: conn, Integration: "providertest", Model: "records"})
	if err != nil {
		t.Fatal(err)
	}
	sig.waitRun(t, s.ID, 1)
	assertSameRecords(t, current(t, en.DB(), tenant, s), providerRecords(t, e.p, account))
	var statuses []int
	for _, r := range e.p.APIRequests() {
		statuses = append(statuses, r.Status)
	}
	if want := []int{429, 503, 503, 200, 200, 200}; !slices.Equal(statuses, want) {
		t.Fatalf("statuses = %v, want %v", statuses, want)
	}
}

// TestLongRetryAfterSnoozesTheJob: a Retry-After longer than a call may wait gives up the
// worker: the job is snoozed until then and nothing reaches the provider meanwhile.
func TestLongRetryAfterSnoozesTheJob(t *testing.T) {
	e := newEnv(t, providertest.Options{})
	en, _ := e.engine(t, nil)
	tenant := testenv.NewTenant()
	conn, account := e.connect(t, tenant)
	e.p.ThrottleNextAPIRequests(account, 1, time.Hour)
	events, cancel := en.River().Subscribe(river.EventKindJobSnoozed)
	defer cancel()
	s, err := en.StartSync(testCtx(t), tenant, engine.StartSpec{ConnectionID: conn, Integration: "providertest", Model: "records"})
	if err != nil {
		t.Fatal(err)
	}
	var job *rivertype.JobRow
	for job == nil {
		select {
		case ev := <-events:
			if ev.Job.Kind == (engine.RunArgs{}).Kind() {
				job = ev.Job
			}
		case <-testCtx(t).Done():
			t.Fatal("the job never snoozed")
		}
	}
	if job.ID != *s.JobID || job.State != rivertype.JobStateScheduled {
		t.Fatalf("snoozed job %d (%s), want the sync's job %d scheduled", job.ID, job.State, *s.JobID)
	}
	if st := getSync(t, en.DB(), tenant, s); !strings.Contains(st.LastError, "rate limit") {
		t.Fatalf("last error = %q", st.LastError)
	}
	if until := time.Until(job.ScheduledAt); until < 50*time.Minute {
		t.Fatalf("job scheduled in %s, want about an hour (Retry-After)", until)
	}
	if n := len(e.p.APIRequests()); n != 1 {
		t.Fatalf("%d requests reached the provider, want 1", n)
	}
}

func TestPauseStopsTheRunAndResumeContinuesIt(t *testing.T) {
	e := newEnv(t, providertest.Options{API: providertest.APIOptions{MaxPageSize: 5}})
	tenant := testenv.NewTenant()
	conn, account := e.connect(t, tenant)
	var en *engine.Engine
	paused := make(chan error, 1)
	en, sig := e.engine(t, func(c *engine.Config) {
		c.Hooks.PageCommitted = func(ctx context.Context, _, _ string, run, page int64) {
			if run == 1 && page == 1 {
				_, err := en.PauseSync(context.WithoutCancel(ctx), tenant, conn, "records")
				paused <- err
			}
		}
	})
	events, cancel := en.River().Subscribe(river.EventKindJobCancelled, river.EventKindJobCompleted)
	defer cancel()
	s, err := en.StartSync(testCtx(t), tenant, engine.StartSpec{ConnectionID: conn, Integration: "providertest", Model: "records", Mode: store.ModeFull})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-paused; err != nil {
		t.Fatal(err)
	}
	// Wait until the job has stopped (cancelled, or completed after seeing the pause).
	for stopped := false; !stopped; {
		select {
		case ev := <-events:
			stopped = ev.Job.ID == *s.JobID // other events: the reconciler's periodic job
		case <-testCtx(t).Done():
			t.Fatal("the job did not stop after the pause")
		}
	}
	st := getSync(t, en.DB(), tenant, s)
	if st.State != store.StatePaused || st.Run.Status != store.RunRunning || st.Run.Pages != 1 {
		t.Fatalf("paused sync: state %s run %+v", st.State, st.Run)
	}
	if n := len(feed(t, en.DB(), tenant, s, 0)); n != 5 {
		t.Fatalf("%d records after pausing at page 1, want 5", n)
	}
	if _, err := en.TriggerSync(testCtx(t), tenant, conn, "records", false); err == nil {
		t.Fatal("TriggerSync on a paused sync succeeded")
	}

	if _, err := en.ResumeSync(testCtx(t), tenant, conn, "records"); err != nil {
		t.Fatal(err)
	}
	sig.waitRun(t, s.ID, 1)
	assertSameRecords(t, current(t, en.DB(), tenant, s), providerRecords(t, e.p, account))
	if st := getSync(t, en.DB(), tenant, s); st.Last.Pages != 5 || st.Last.Added != 25 {
		t.Fatalf("resumed run = %+v", st.Last)
	}
}

// TestFailedAttemptResumesOnRetry: more 5xx than one attempt absorbs fail the attempt (the
// error is recorded); River retries the job, and the run resumes after its committed pages.
func TestFailedAttemptResumesOnRetry(t *testing.T) {
	e := newEnv(t, providertest.Options{API: providertest.APIOptions{MaxPageSize: 10}})
	e.breakerFailures = 20 // this test is about River's retry, not the breaker
	tenant := testenv.NewTenant()
	conn, account := e.connect(t, tenant)
	var once sync.Once
	en, sig := e.engine(t, func(c *engine.Config) {
		c.Hooks.PageCommitted = func(_ context.Context, _, _ string, _, page int64) {
			if page == 1 {
				// fetch tries 4 times per call: the second page fails a whole attempt.
				once.Do(func() { e.p.FailNextAPIRequests(account, 5, 503) })
			}
		}
	})
	s, err := en.StartSync(testCtx(t), tenant, engine.StartSpec{ConnectionID: conn, Integration: "providertest", Model: "records"})
	if err != nil {
		t.Fatal(err)
	}
	sig.waitRun(t, s.ID, 1)
	assertSameRecords(t, current(t, en.DB(), tenant, s), providerRecords(t, e.p, account))
	st := getSync(t, en.DB(), tenant, s)
	if st.Last.Number != 1 || st.Last.Pages != 3 || st.Last.Added != 25 || st.LastError != "" {
		t.Fatalf("run = %+v, last error %q", st.Last, st.LastError)
	}
	var firstPage int
	for _, r := range e.p.APIRequests() {
		if q, _ := url.ParseQuery(r.RawQuery); q.Get("cursor") == "" {
			firstPage++
		}
	}
	if firstPage != 1 {
		t.Fatalf("the first page was fetched %d times, want once (the retry resumed)", firstPage)
	}
}

// TestTenantConcurrencyCap: with two workers and a cap of one run per tenant, tenant A's
// runs cannot take both workers: B's run finishes while A's first run is held mid-way.
func TestTenantConcurrencyCap(t *testing.T) {
	e := newEnv(t, providertest.Options{API: providertest.APIOptions{MaxPageSize: 10}})
	a, b := testenv.TwoTenants()
	release := make(chan struct{})
	var holding atomic.Int32
	en, sig := e.engine(t, func(c *engine.Config) {
		c.MaxWorkers, c.TenantConcurrency = 2, 1
		c.Hooks.PageCommitted = func(ctx context.Context, tenantID, _ string, _, _ int64) {
			if tenantID == a.TenantID {
				holding.Add(1)
				select { // hold every page of A until B is done
				case <-release:
				case <-ctx.Done():
				}
			}
		}
	})
	var aSyncs []*store.Sync
	for range 3 {
		conn, _ := e.connect(t, a)
		s, err := en.StartSync(testCtx(t), a, engine.StartSpec{ConnectionID: conn, Integration: "providertest", Model: "records"})
		if err != nil {
			t.Fatal(err)
		}
		aSyncs = append(aSyncs, s)
	}
	connB, accountB := e.connect(t, b)
	sB, err := en.StartSync(testCtx(t), b, engine.StartSpec{ConnectionID: connB, Integration: "providertest", Model: "records"})
	if err != nil {
		t.Fatal(err)
	}
	sig.waitRun(t, sB.ID, 1)
	if n := holding.Load(); n > 1 {
		t.Fatalf("tenant A held %d runs at once with a cap of 1", n)
	}
	assertSameRecords(t, current(t, en.DB(), b, sB), providerRecords(t, e.p, accountB))
	close(release)
	var ids []string
	for _, s := range aSyncs {
		ids = append(ids, s.ID)
	}
	sig.waitAll(t, ids...)
}
