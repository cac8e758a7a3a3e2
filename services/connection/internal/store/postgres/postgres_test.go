package postgres_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/pkg/testenv"
	"github.com/bulkhead/bulkhead/services/connection/internal/store"
	"github.com/bulkhead/bulkhead/services/connection/internal/store/postgres"
	"github.com/bulkhead/bulkhead/services/connection/migrations"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var spec = testenv.DBSpec{Name: "connection", Migrations: migrations.FS}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// cast is one tenant's people and connections: an org-level connection, and one user-level
// connection each for x and y.
type cast struct {
	tenant        string
	x, y, admin   store.Actor // admin has Admin set; x and y are plain members
	sa            store.Actor // a service account: no user
	org, ofX, ofY store.Connection
}

func newConn(integration string, scope store.Scope, owner string) store.NewConnection {
	return store.NewConnection{
		ID: uuid.NewString(), Integration: integration, AuthType: store.AuthOAuth2, Scope: scope,
		OwnerUserID: owner, Creator: "user:" + uuid.NewString(), Fields: map[string]string{"subdomain": "acme"},
		Tags: []string{"t1"}, GrantedScopes: []string{"read"}, CredentialVersion: 1,
		AccessExpiresAt: time.Now().Add(time.Hour).Truncate(time.Microsecond), At: time.Now(),
	}
}

func newCast(t *testing.T, st *postgres.Postgres) cast {
	t.Helper()
	ctx := ctxT(t)
	tenant := uuid.NewString()
	c := cast{
		tenant: tenant,
		x:      store.Actor{TenantID: tenant, UserID: uuid.NewString()},
		y:      store.Actor{TenantID: tenant, UserID: uuid.NewString()},
		admin:  store.Actor{TenantID: tenant, UserID: uuid.NewString(), Admin: true},
		sa:     store.Actor{TenantID: tenant},
	}
	var err error
	if c.org, err = st.CreateConnection(ctx, c.admin, newConn("github", store.ScopeOrg, "")); err != nil {
		t.Fatal(err)
	}
	if c.ofX, err = st.CreateConnection(ctx, c.x, newConn("github", store.ScopeUser, c.x.UserID)); err != nil {
		t.Fatal(err)
	}
	if c.ofY, err = st.CreateConnection(ctx, c.y, newConn("slack", store.ScopeUser, c.y.UserID)); err != nil {
		t.Fatal(err)
	}
	return c
}

func newStore(t *testing.T) (*postgres.Postgres, *testenv.Database) {
	t.Helper()
	db := testenv.NewDatabase(t, spec)
	return postgres.New(db.AppDB(t)), db
}

func TestVerifyIsolation(t *testing.T) {
	t.Parallel()
	db := testenv.NewDatabase(t, spec)
	if err := pgtenant.VerifyIsolation(ctxT(t), db.SuperURL, db.Roles.App); err != nil {
		t.Fatal(err)
	}
}

// TestVisibility: who sees which connection, through every read of the store.
func TestVisibility(t *testing.T) {
	t.Parallel()
	st, _ := newStore(t)
	a := newCast(t, st)
	b := newCast(t, st)
	ctx := ctxT(t)

	cases := []struct {
		name  string
		actor store.Actor
		sees  []store.Connection
		blind []store.Connection
	}{
		{"member x: org and own", a.x, []store.Connection{a.org, a.ofX}, []store.Connection{a.ofY, b.org, b.ofX}},
		{"member y: org and own", a.y, []store.Connection{a.org, a.ofY}, []store.Connection{a.ofX, b.org, b.ofY}},
		{"admin: every connection of its tenant", a.admin, []store.Connection{a.org, a.ofX, a.ofY}, []store.Connection{b.org, b.ofX, b.ofY}},
		{"admin flag without a user", store.Actor{TenantID: a.tenant, Admin: true}, []store.Connection{a.org, a.ofX, a.ofY}, []store.Connection{b.org}},
		{"x's user id as admin in the other tenant", store.Actor{TenantID: b.tenant, UserID: a.x.UserID, Admin: true}, []store.Connection{b.org, b.ofX, b.ofY}, []store.Connection{a.org, a.ofX, a.ofY}},
		{"x's user id in the other tenant", store.Actor{TenantID: b.tenant, UserID: a.x.UserID}, []store.Connection{b.org}, []store.Connection{a.ofX, b.ofX}},
		{"service account: org only", a.sa, []store.Connection{a.org}, []store.Connection{a.ofX, a.ofY}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, c := range tc.sees {
				if got, err := st.GetConnection(ctx, tc.actor, c.ID); err != nil || got.ID != c.ID {
					t.Errorf("GetConnection(%s): %v", c.ID, err)
				}
			}
			for _, c := range tc.blind {
				if _, err := st.GetConnection(ctx, tc.actor, c.ID); !errors.Is(err, store.ErrNotFound) {
					t.Errorf("GetConnection(%s) = %v, want ErrNotFound", c.ID, err)
				}
				err := st.WithLockedConnection(ctx, tc.actor, c.ID, func(context.Context, store.Locked) error {
					t.Errorf("locked a connection it may not see")
					return nil
				})
				if !errors.Is(err, store.ErrNotFound) {
					t.Errorf("WithLockedConnection(%s) = %v, want ErrNotFound", c.ID, err)
				}
			}
			list, next, err := st.ListConnections(ctx, tc.actor, store.Filter{}, store.Page{})
			if err != nil || next != nil {
				t.Fatalf("ListConnections: %v, %v", next, err)
			}
			var ids []string
			for _, c := range list {
				ids = append(ids, c.ID)
			}
			for _, c := range tc.sees {
				if !slices.Contains(ids, c.ID) {
					t.Errorf("list misses %s", c.ID)
				}
			}
			if len(ids) != len(tc.sees) {
				t.Errorf("list has %d connections, want %d", len(ids), len(tc.sees))
			}
		})
	}
}

// TestWriteRefusals: writes the policies and constraints refuse, whatever the code asks.
func TestWriteRefusals(t *testing.T) {
	t.Parallel()
	st, db := newStore(t)
	a := newCast(t, st)
	ctx := ctxT(t)

	// Nobody creates a user-level connection for someone else — admins included.
	for name, actor := range map[string]store.Actor{"member": a.x, "admin": a.admin, "service account": a.sa} {
		if _, err := st.CreateConnection(ctx, actor, newConn("github", store.ScopeUser, a.y.UserID)); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s created y's user-level connection: %v", name, err)
		}
	}
	// Nor writes into another tenant (what a store bug passing the wrong tenant_id would do).
	nc := newConn("github", store.ScopeOrg, "")
	_, err := pgtenant.Exec(ctx, db.AppDB(t), pgtenant.Scope{TenantID: a.tenant, UserID: a.x.UserID},
		`INSERT INTO connections (tenant_id, id, integration, auth_type, scope, creator, credential_version)
		 VALUES ($1, $2, 'github', 'oauth2', 'org', 'user:x', 1)`, uuid.NewString(), nc.ID)
	if pgCode(err) != "42501" {
		t.Errorf("insert into another tenant: %v, want 42501", err)
	}
	// Constraint: a user-level connection without an owner.
	if _, err := st.CreateConnection(ctx, a.admin, func() store.NewConnection { c := nc; c.Scope = store.ScopeUser; return c }()); err == nil {
		t.Error("created a user-level connection without owner")
	}
	// Revoked is final: the store refuses every later change.
	err = st.WithLockedConnection(ctx, a.x, a.ofX.ID, func(ctx context.Context, l store.Locked) error {
		if _, err := l.Revoke(ctx, store.RevocationConfirmed, time.Time{}, time.Now()); err != nil {
			return err
		}
		if _, err := l.SetEnabled(ctx, true, time.Now()); !errors.Is(err, store.ErrRevoked) {
			t.Errorf("SetEnabled after revoke: %v", err)
		}
		if _, err := l.RecordRefresh(ctx, store.CredentialUpdate{CredentialVersion: 2, At: time.Now()}); !errors.Is(err, store.ErrRevoked) {
			t.Errorf("RecordRefresh after revoke: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// pgCode returns err's SQLSTATE.
func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// TestRLSWithRawSQL: as the app role with hand-written SQL — what a bug in the store could
// send — user-level rows stay hidden and identity columns stay fixed.
func TestRLSWithRawSQL(t *testing.T) {
	t.Parallel()
	st, db := newStore(t)
	a := newCast(t, st)
	ctx := ctxT(t)
	pool := db.AppPool(t)

	count := func(t *testing.T, conn *pgx.Conn, sql string, args ...any) int {
		t.Helper()
		var n int
		if err := conn.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	acquire := func(t *testing.T) *pgx.Conn {
		c, err := pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Destroy rather than reuse: these tests leave session state behind on purpose.
		t.Cleanup(func() { _ = c.Conn().Close(ctx); c.Release() })
		return c.Conn()
	}

	t.Run("no tenant sees nothing", func(t *testing.T) {
		conn := acquire(t)
		if n := count(t, conn, "SELECT count(*) FROM connections"); n != 0 {
			t.Fatalf("saw %d connections without a tenant", n)
		}
	})
	t.Run("session-level admin flag does not widen later transactions", func(t *testing.T) {
		conn := acquire(t)
		// A bug sets the flag for the whole session, with a value that matched some transaction.
		if _, err := conn.Exec(ctx, "SELECT set_config('app.connections_admin', now()::text, false)"); err != nil {
			t.Fatal(err)
		}
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		if _, err := tx.Exec(ctx, "SELECT set_config('app.tenant_id', $1, true), set_config('app.user_id', $2, true)", a.tenant, a.x.UserID); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM connections WHERE id = $1", a.ofY.ID).Scan(&n); err != nil || n != 0 {
			t.Fatalf("x saw y's connection through a stale admin flag: %d, %v", n, err)
		}
		// The same flag set inside the transaction works: the test is not vacuous.
		if _, err := tx.Exec(ctx, "SELECT set_config('app.connections_admin', now()::text, true)"); err != nil {
			t.Fatal(err)
		}
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM connections WHERE id = $1", a.ofY.ID).Scan(&n); err != nil || n != 1 {
			t.Fatalf("admin flag in the transaction: %d, %v", n, err)
		}
	})
	t.Run("a guessed flag value does not match", func(t *testing.T) {
		conn := acquire(t)
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		for _, v := range []string{"on", "true", "1", (time.Now().Add(-time.Second)).Format(time.RFC3339Nano)} {
			if _, err := tx.Exec(ctx, "SELECT set_config('app.tenant_id', $1, true), set_config('app.user_id', $2, true), set_config('app.connections_admin', $3, true)", a.tenant, a.x.UserID, v); err != nil {
				t.Fatal(err)
			}
			var n int
			if err := tx.QueryRow(ctx, "SELECT count(*) FROM connections WHERE id = $1", a.ofY.ID).Scan(&n); err != nil || n != 0 {
				t.Fatalf("flag %q showed y's connection: %d, %v", v, n, err)
			}
		}
	})
	t.Run("member cannot update another's connection", func(t *testing.T) {
		tag, err := pgtenant.Exec(ctx, db.AppDB(t), pgtenant.Scope{TenantID: a.tenant, UserID: a.x.UserID},
			"UPDATE connections SET status = 'disabled' WHERE id = $1", a.ofY.ID)
		if err != nil || tag.RowsAffected() != 0 {
			t.Fatalf("updated y's connection as x: %v, %v", tag, err)
		}
	})
	t.Run("nobody moves a connection to another owner or scope", func(t *testing.T) {
		conn := acquire(t)
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		if _, err := tx.Exec(ctx, "SELECT set_config('app.tenant_id', $1, true), set_config('app.user_id', $2, true), set_config('app.connections_admin', now()::text, true)", a.tenant, a.admin.UserID); err != nil {
			t.Fatal(err)
		}
		for _, stmt := range []string{
			"UPDATE connections SET owner_user_id = '" + a.admin.UserID + "' WHERE id = '" + a.ofY.ID + "'",
			"UPDATE connections SET scope = 'org', owner_user_id = NULL WHERE id = '" + a.ofY.ID + "'",
			"UPDATE connections SET creator = 'user:someone' WHERE id = '" + a.org.ID + "'",
		} {
			_, err := tx.Exec(ctx, "SAVEPOINT s")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, stmt); pgCode(err) != "23514" {
				t.Errorf("%s: %v, want check_violation", stmt, err)
			}
			if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT s"); err != nil {
				t.Fatal(err)
			}
		}
	})
	t.Run("nobody deletes an unrevoked connection or an outbox event", func(t *testing.T) {
		for _, stmt := range []string{"DELETE FROM connections", "DELETE FROM outbox", "UPDATE outbox SET payload = '{}'"} {
			tag, err := pgtenant.Exec(ctx, db.AppDB(t), pgtenant.Scope{TenantID: a.tenant, UserID: a.x.UserID}, stmt)
			if err != nil || tag.RowsAffected() != 0 {
				t.Errorf("%s: %v, %v", stmt, tag, err)
			}
		}
	})
}

// TestDeletePolicy: only a revoked connection whose revocation is final can be deleted, and
// only by whoever may change it — checked with raw DELETEs as the app role, below the store's
// own checks — and Locked.Delete writes connection.deleted.
func TestDeletePolicy(t *testing.T) {
	t.Parallel()
	st, db := newStore(t)
	a := newCast(t, st)
	other := newCast(t, st)
	ctx := ctxT(t)
	revoke := func(actor store.Actor, id string, state store.RevocationState) {
		t.Helper()
		err := st.WithLockedConnection(ctx, actor, id, func(ctx context.Context, l store.Locked) error {
			_, err := l.Revoke(ctx, state, time.Now().Add(time.Hour), time.Now())
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	revoke(a.x, a.ofX.ID, store.RevocationConfirmed)
	revoke(a.y, a.ofY.ID, store.RevocationPending)
	revoke(other.x, other.ofX.ID, store.RevocationConfirmed)
	rawDelete := func(sc pgtenant.Scope, id string) int64 {
		t.Helper()
		tag, err := pgtenant.Exec(ctx, db.AppDB(t), sc, "DELETE FROM connections WHERE id = $1", id)
		if err != nil {
			t.Fatal(err)
		}
		return tag.RowsAffected()
	}
	for name, tc := range map[string]struct {
		sc pgtenant.Scope
		id string
	}{
		"active org connection":                   {pgtenant.Scope{TenantID: a.tenant, UserID: a.admin.UserID}, a.org.ID},
		"another member's revoked connection":     {pgtenant.Scope{TenantID: a.tenant, UserID: a.y.UserID}, a.ofX.ID},
		"own connection with pending revocation":  {pgtenant.Scope{TenantID: a.tenant, UserID: a.y.UserID}, a.ofY.ID},
		"another tenant's revoked connection":     {pgtenant.Scope{TenantID: a.tenant, UserID: other.x.UserID}, other.ofX.ID},
		"another tenant's connection, no user id": {pgtenant.Scope{TenantID: a.tenant}, other.ofX.ID},
	} {
		if n := rawDelete(tc.sc, tc.id); n != 0 {
			t.Errorf("%s: deleted %d rows", name, n)
		}
	}
	err := st.WithLockedConnection(ctx, a.y, a.ofY.ID, func(ctx context.Context, l store.Locked) error { return l.Delete(ctx, time.Now()) })
	if !errors.Is(err, store.ErrNotDeletable) {
		t.Fatalf("Delete with a pending revocation: %v, want ErrNotDeletable", err)
	}
	// The owner deletes its own confirmed-revoked connection: the policy is not vacuous.
	err = st.WithLockedConnection(ctx, a.x, a.ofX.ID, func(ctx context.Context, l store.Locked) error { return l.Delete(ctx, time.Now()) })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetConnection(ctx, a.admin, a.ofX.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted connection: %v, want ErrNotFound", err)
	}
	evs, err := st.Events(ctx, a.tenant, a.ofX.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) == 0 || evs[len(evs)-1].Type != store.EventDeleted {
		t.Fatalf("events after the delete: %v", evs)
	}
	if _, err := st.GetConnection(ctx, other.x, other.ofX.ID); err != nil {
		t.Fatalf("the other tenant's connection: %v", err)
	}
}

// TestLockSerializes: a second WithLockedConnection on the same row waits in PostgreSQL until
// the first commits, and then sees its write.
func TestLockSerializes(t *testing.T) {
	t.Parallel()
	st, db := newStore(t)
	a := newCast(t, st)
	ctx := ctxT(t)
	super := db.SuperPool(t)

	entered := make(chan struct{})
	release := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		err := st.WithLockedConnection(ctx, a.x, a.ofX.ID, func(ctx context.Context, l store.Locked) error {
			close(entered)
			<-release
			_, err := l.RecordRefresh(ctx, store.CredentialUpdate{CredentialVersion: 2, At: time.Now()})
			return err
		})
		if err != nil {
			t.Error(err)
		}
	}()
	<-entered
	var seen int64
	go func() {
		defer wg.Done()
		err := st.WithLockedConnection(ctx, a.x, a.ofX.ID, func(_ context.Context, l store.Locked) error {
			seen = l.Connection().CredentialVersion
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	}()
	// Wait until the second caller is blocked on the row lock, as PostgreSQL reports it.
	for {
		var waiting int
		if err := super.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%FOR UPDATE OF c%'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting == 1 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("second caller never waited on the lock")
		}
	}
	close(release)
	wg.Wait()
	if seen != 2 {
		t.Fatalf("second caller saw credential version %d, want 2 (the first caller's write)", seen)
	}
}

// TestEvents: each change writes its event in the same transaction; a rolled-back change
// writes none; recovery after failures is announced.
func TestEvents(t *testing.T) {
	t.Parallel()
	st, _ := newStore(t)
	a := newCast(t, st)
	ctx := ctxT(t)
	now := time.Now()
	lock := func(fn func(ctx context.Context, l store.Locked) error) error {
		return st.WithLockedConnection(ctx, a.x, a.ofX.ID, fn)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(lock(func(ctx context.Context, l store.Locked) error {
		_, err := l.RecordFailure(ctx, store.Failure{At: now, Reason: "provider answered 503"})
		return err
	}))
	must(lock(func(ctx context.Context, l store.Locked) error {
		c, err := l.RecordFailure(ctx, store.Failure{At: now, Reason: "invalid_grant", NeedsReauth: true})
		if err == nil && (c.Status != store.StatusNeedsReauth || c.ConsecutiveFailures != 2 || c.LastFailureReason != "invalid_grant") {
			t.Errorf("after invalid_grant: %+v", c)
		}
		return err
	}))
	rollback := errors.New("rollback")
	if err := lock(func(ctx context.Context, l store.Locked) error {
		if _, err := l.RecordRefresh(ctx, store.CredentialUpdate{CredentialVersion: 9, At: now}); err != nil {
			return err
		}
		return rollback
	}); !errors.Is(err, rollback) {
		t.Fatalf("fn's error not returned: %v", err)
	}
	must(lock(func(ctx context.Context, l store.Locked) error {
		c, err := l.RecordRefresh(ctx, store.CredentialUpdate{CredentialVersion: 2, AccessExpiresAt: now.Add(time.Hour), At: now})
		if err == nil && (c.Status != store.StatusActive || c.ConsecutiveFailures != 0 || c.CredentialVersion != 2) {
			t.Errorf("after recovery: %+v", c)
		}
		return err
	}))
	must(lock(func(ctx context.Context, l store.Locked) error {
		if _, err := l.SetEnabled(ctx, false, now); err != nil {
			return err
		}
		if _, err := l.SetEnabled(ctx, false, now); err != nil { // no change, no event
			return err
		}
		_, err := l.Revoke(ctx, store.RevocationPending, now.Add(time.Minute), now)
		return err
	}))
	must(lock(func(ctx context.Context, l store.Locked) error {
		c, err := l.Revoke(ctx, store.RevocationConfirmed, time.Time{}, now)
		if err == nil && (c.RevocationState != store.RevocationConfirmed || c.RevocationAttempts != 2 || !c.RevocationNextAt.IsZero()) {
			t.Errorf("after confirmation: %+v", c)
		}
		return err
	}))
	evs, err := st.Events(ctx, a.tenant, a.ofX.ID)
	must(err)
	var got []store.EventType
	for _, e := range evs {
		got = append(got, e.Type)
		if e.Payload["connection_id"] != a.ofX.ID || e.Payload["owner_user_id"] != a.x.UserID {
			t.Errorf("event %s payload %v", e.Type, e.Payload)
		}
	}
	want := []store.EventType{store.EventCreated, store.EventRefreshFailed, store.EventRefreshFailed,
		store.EventRefreshed, store.EventRecovered, store.EventDisabled, store.EventRevoked}
	if !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	// Another tenant reads none of them.
	if evs, err := st.Events(ctx, uuid.NewString(), a.ofX.ID); err != nil || len(evs) != 0 {
		t.Fatalf("other tenant read events: %v, %v", evs, err)
	}
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	st, _ := newStore(t)
	a := newCast(t, st)
	ctx := ctxT(t)
	nc := newConn("stripe", store.ScopeOrg, "")
	nc.IdempotencyKey = "k1"
	first, err := st.CreateConnection(ctx, a.admin, nc)
	if err != nil {
		t.Fatal(err)
	}
	again := nc
	again.ID = uuid.NewString()
	if _, err := st.CreateConnection(ctx, a.admin, again); !errors.Is(err, store.ErrIdempotencyKeyTaken) {
		t.Fatalf("second create: %v", err)
	}
	if got, err := st.GetConnectionByIdempotencyKey(ctx, a.x, "k1"); err != nil || got.ID != first.ID {
		t.Fatalf("lookup: %v, %v", got.ID, err)
	}
	// The key is per tenant.
	b := newCast(t, st)
	other := nc
	other.ID = uuid.NewString()
	if _, err := st.CreateConnection(ctx, b.admin, other); err != nil {
		t.Fatalf("same key in another tenant: %v", err)
	}
}

func TestStates(t *testing.T) {
	t.Parallel()
	st, _ := newStore(t)
	ctx := ctxT(t)
	tenant := uuid.NewString()
	now := time.Now().Truncate(time.Microsecond)
	secret := sha256.Sum256([]byte("secret"))
	s := store.State{
		TenantID: tenant, ID: uuid.NewString(), SecretHash: secret[:], Principal: "user:" + uuid.NewString(),
		UserID: uuid.NewString(), Integration: "github", Scope: store.ScopeUser, RequestedScopes: []string{"repo"},
		Fields: map[string]string{"a": "b"}, VerifierCiphertext: "vault:v1:xyz", CreatedAt: now, ExpiresAt: now.Add(10 * time.Minute),
	}
	if err := st.CreateState(ctx, s); err != nil {
		t.Fatal(err)
	}
	wrong := sha256.Sum256([]byte("guess"))
	if _, err := st.ConsumeState(ctx, tenant, s.ID, wrong[:], now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("wrong secret: %v", err)
	}
	if _, err := st.ConsumeState(ctx, uuid.NewString(), s.ID, secret[:], now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("other tenant: %v", err)
	}
	// Many concurrent callbacks: exactly one gets the state.
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := st.ConsumeState(ctx, tenant, s.ID, secret[:], now)
			if err == nil {
				mu.Lock()
				won++
				mu.Unlock()
				if got.UserID != s.UserID || got.VerifierCiphertext != s.VerifierCiphertext || got.Fields["a"] != "b" {
					t.Errorf("state read back as %+v", got)
				}
			} else if !errors.Is(err, store.ErrNotFound) {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if won != 1 {
		t.Fatalf("%d callbacks consumed the state, want 1", won)
	}
	// An expired state is refused (and gone).
	s2 := s
	s2.ID = uuid.NewString()
	if err := st.CreateState(ctx, s2); err != nil {
		t.Fatal(err)
	}
	if _, err := st.ConsumeState(ctx, tenant, s2.ID, secret[:], s2.ExpiresAt); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("expired state: %v", err)
	}
	if _, err := st.ConsumeState(ctx, tenant, s2.ID, secret[:], now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("expired state consumed twice: %v", err)
	}
}

func TestSettings(t *testing.T) {
	t.Parallel()
	st, _ := newStore(t)
	ctx := ctxT(t)
	tenant := uuid.NewString()
	if _, err := st.GetSettings(ctx, tenant, "github"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("defaults: %v", err)
	}
	secretID := uuid.NewString()
	got, err := st.UpdateSettings(ctx, tenant, "github", func(s *store.Settings) error {
		if !s.Enabled {
			t.Error("defaults row is not enabled")
		}
		s.Enabled, s.OAuthClientID, s.OAuthSecretID = false, "client-1", secretID
		s.AllowedScopes, s.ConnectionScope = []string{"repo"}, store.ScopeOrg
		return nil
	})
	if err != nil || got.Enabled || got.OAuthSecretID != secretID || got.ConnectionScope != store.ScopeOrg {
		t.Fatalf("update: %+v, %v", got, err)
	}
	refuse := errors.New("no")
	if _, err := st.UpdateSettings(ctx, tenant, "github", func(s *store.Settings) error { s.Enabled = true; return refuse }); !errors.Is(err, refuse) {
		t.Fatalf("change error: %v", err)
	}
	// A client id without a secret breaks a constraint.
	if _, err := st.UpdateSettings(ctx, tenant, "github", func(s *store.Settings) error { s.OAuthSecretID = ""; return nil }); err == nil {
		t.Fatal("client id without secret accepted")
	}
	list, err := st.ListSettings(ctx, tenant)
	if err != nil || len(list) != 1 || list[0].Enabled {
		t.Fatalf("list: %+v, %v", list, err)
	}
	if other, err := st.ListSettings(ctx, uuid.NewString()); err != nil || len(other) != 0 {
		t.Fatalf("other tenant: %+v, %v", other, err)
	}
	// The setting shows on the tenant's connections.
	c, err := st.CreateConnection(ctx, store.Actor{TenantID: tenant}, newConn("github", store.ScopeOrg, ""))
	if err != nil || c.IntegrationEnabled {
		t.Fatalf("connection of a disabled integration: enabled=%v, %v", c.IntegrationEnabled, err)
	}
}

func TestListPaging(t *testing.T) {
	t.Parallel()
	st, _ := newStore(t)
	ctx := ctxT(t)
	actor := store.Actor{TenantID: uuid.NewString(), UserID: uuid.NewString()}
	for i := range 7 {
		integration := "github"
		if i%2 == 1 {
			integration = "slack"
		}
		if _, err := st.CreateConnection(ctx, actor, newConn(integration, store.ScopeOrg, "")); err != nil {
			t.Fatal(err)
		}
	}
	var all []store.Connection
	page := store.Page{Size: 3}
	for {
		got, next, err := st.ListConnections(ctx, actor, store.Filter{}, page)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, got...)
		if next == nil {
			break
		}
		page.After = next
	}
	if len(all) != 7 {
		t.Fatalf("paged %d connections, want 7", len(all))
	}
	for i := 1; i < len(all); i++ {
		if all[i].CreatedAt.After(all[i-1].CreatedAt) {
			t.Fatal("not newest first")
		}
	}
	slack, _, err := st.ListConnections(ctx, actor, store.Filter{Integration: "slack"}, store.Page{})
	if err != nil || len(slack) != 3 {
		t.Fatalf("filter: %d, %v", len(slack), err)
	}
}
