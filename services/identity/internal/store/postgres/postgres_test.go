package postgres_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bulkhead/bulkhead/pkg/authz"
	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/pkg/testenv"
	"github.com/bulkhead/bulkhead/services/identity/internal/store"
	"github.com/bulkhead/bulkhead/services/identity/internal/store/postgres"
	"github.com/bulkhead/bulkhead/services/identity/migrations"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// tenantTables are identity's tenant-owned tables. TestRLSNoTenantSeesNothing fails when a
// table with a tenant_id column is missing here, so a new table cannot skip the proof.
var tenantTables = []string{"tenants", "users", "memberships", "service_accounts", "api_keys", "outbox"}

type fixture struct {
	db    *testenv.Database
	store *postgres.Postgres
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	db := testenv.NewDatabase(t, testenv.DBSpec{Name: "identity", Migrations: migrations.FS})
	return fixture{db: db, store: postgres.New(db.AppDB(t))}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func newKey(t *testing.T, userID, saID string) store.NewAPIKey {
	t.Helper()
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(uuid.NewString()))
	return store.NewAPIKey{ID: uuid.NewString(), LookupID: hex.EncodeToString(b), SecretHash: sum[:], UserID: userID, ServiceAccountID: saID}
}

// createTenant makes a tenant with an owner and the owner's key.
func (f fixture) createTenant(t *testing.T) *store.TenantCreation {
	t.Helper()
	owner := uuid.NewString()
	res, err := f.store.CreateTenant(ctx(t), store.NewTenant{
		ID:       uuid.NewString(),
		Name:     "acme",
		Owner:    store.NewMember{UserID: owner, Email: owner[:8] + "@example.com", Role: authz.RoleOwner},
		OwnerKey: newKey(t, owner, ""),
	})
	if err != nil {
		t.Fatalf("CreateTenant: %v", err)
	}
	return res
}

func TestVerifyIsolation(t *testing.T) {
	f := newFixture(t)
	if err := pgtenant.VerifyIsolation(ctx(t), f.db.SuperURL, f.db.Roles.App); err != nil {
		t.Fatal(err)
	}
}

// TestRLSNoTenantSeesNothing is the RLS proof for identity's own tables, as the app role: with
// rows present in every tenant table, a connection that sets no tenant counts zero rows in
// each, a connection scoped to tenant A sees none of B's rows, and an INSERT of a row for B is
// refused.
func TestRLSNoTenantSeesNothing(t *testing.T) {
	f := newFixture(t)
	c := ctx(t)
	a := f.createTenant(t)
	b := f.createTenant(t)
	// A service account, a removed member (outbox row) and a second key so every table has rows.
	for _, tn := range []*store.TenantCreation{a, b} {
		sa, err := f.store.CreateServiceAccount(c, tn.Tenant.ID, store.ServiceAccount{ID: uuid.NewString(), Name: "bot", Scopes: []string{"members.read"}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.store.CreateAPIKey(c, tn.Tenant.ID, newKey(t, "", sa.ID)); err != nil {
			t.Fatal(err)
		}
	}

	super := f.db.SuperPool(t)
	rows, err := super.Query(c, `SELECT c.relname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
		WHERE a.attname IN ('tenant_id') AND c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace`)
	if err != nil {
		t.Fatal(err)
	}
	withTenantID, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range withTenantID {
		found := false
		for _, known := range tenantTables {
			found = found || known == name
		}
		if !found {
			t.Errorf("table %s has tenant_id but is not in tenantTables: add it to the RLS proof", name)
		}
	}

	app := f.db.AppPool(t)
	for _, table := range tenantTables {
		var all int
		if err := super.QueryRow(c, "SELECT count(*) FROM "+table).Scan(&all); err != nil {
			t.Fatal(err)
		}
		if all == 0 {
			t.Fatalf("%s: fixture left the table empty; the proof would prove nothing", table)
		}
		var seen int
		if err := app.QueryRow(c, "SELECT count(*) FROM "+table).Scan(&seen); err != nil {
			t.Fatal(err)
		}
		if seen != 0 {
			t.Errorf("%s: app role with no tenant set sees %d of %d rows, want 0", table, seen, all)
		}
	}

	// Scoped to A: none of B's rows, in any table.
	col := map[string]string{"tenants": "id"}
	err = f.db.AppDB(t).InTx(c, pgtenant.Scope{TenantID: a.Tenant.ID}, func(tx pgx.Tx) error {
		for _, table := range tenantTables {
			k := col[table]
			if k == "" {
				k = "tenant_id"
			}
			var n int
			if err := tx.QueryRow(c, "SELECT count(*) FROM "+table+" WHERE "+k+" = $1", b.Tenant.ID).Scan(&n); err != nil {
				return err
			}
			if n != 0 {
				t.Errorf("%s: scoped to A, sees %d rows of B", table, n)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// Scoped to A, writing a row for B is refused by the policy (42501), table by table.
	writes := map[string]func(tx pgx.Tx) error{
		"tenants": func(tx pgx.Tx) error {
			_, err := tx.Exec(c, "INSERT INTO tenants (id, name) VALUES ($1, 'x')", uuid.NewString())
			return err
		},
		"users": func(tx pgx.Tx) error {
			_, err := tx.Exec(c, "INSERT INTO users (tenant_id, id, email) VALUES ($1, $2, 'x@example.com')", b.Tenant.ID, uuid.NewString())
			return err
		},
		"memberships": func(tx pgx.Tx) error {
			_, err := tx.Exec(c, "INSERT INTO memberships (tenant_id, user_id, role) VALUES ($1, $2, 'owner')", b.Tenant.ID, b.Owner.UserID)
			return err
		},
		"service_accounts": func(tx pgx.Tx) error {
			_, err := tx.Exec(c, "INSERT INTO service_accounts (tenant_id, id, name, scopes) VALUES ($1, $2, 'evil', '{members.read}')", b.Tenant.ID, uuid.NewString())
			return err
		},
		"api_keys": func(tx pgx.Tx) error {
			_, err := tx.Exec(c, `INSERT INTO api_keys (tenant_id, id, lookup_id, secret_hash, user_id)
				VALUES ($1, $2, '0123456789abcdef', decode(repeat('00', 32), 'hex'), $3)`, b.Tenant.ID, uuid.NewString(), b.Owner.UserID)
			return err
		},
		"outbox": func(tx pgx.Tx) error {
			_, err := tx.Exec(c, `INSERT INTO outbox (tenant_id, id, event_type, payload) VALUES ($1, $2, 'member.removed', '{}')`, b.Tenant.ID, uuid.NewString())
			return err
		},
	}
	for _, table := range tenantTables {
		t.Run("insert into "+table+" for B", func(t *testing.T) {
			write := writes[table]
			if write == nil {
				t.Fatalf("no cross-tenant write case for %s", table)
			}
			err := f.db.AppDB(t).InTx(c, pgtenant.Scope{TenantID: a.Tenant.ID}, write)
			if !isCode(err, "42501") {
				t.Fatalf("got %v, want SQLSTATE 42501 (row-level security)", err)
			}
		})
	}
}

func TestTenantIsolationThroughStore(t *testing.T) {
	f := newFixture(t)
	c := ctx(t)
	a, b := f.createTenant(t), f.createTenant(t)
	sa, err := f.store.CreateServiceAccount(c, b.Tenant.ID, store.ServiceAccount{ID: uuid.NewString(), Name: "bot", Scopes: []string{"members.read"}})
	if err != nil {
		t.Fatal(err)
	}
	// Every read or write addressed to B's resources from A's scope answers ErrNotFound.
	cases := map[string]func() error{
		"GetTenant": func() error { _, err := f.store.GetTenant(c, uuid.NewString()); return err },
		"GetMember": func() error { _, err := f.store.GetMember(c, a.Tenant.ID, b.Owner.UserID); return err },
		"UpdateMemberRole": func() error {
			_, err := f.store.UpdateMemberRole(c, a.Tenant.ID, b.Owner.UserID, authz.RoleViewer, nil)
			return err
		},
		"RemoveMember":         func() error { return f.store.RemoveMember(c, a.Tenant.ID, b.Owner.UserID, nil) },
		"GetServiceAccount":    func() error { _, err := f.store.GetServiceAccount(c, a.Tenant.ID, sa.ID); return err },
		"DeleteServiceAccount": func() error { return f.store.DeleteServiceAccount(c, a.Tenant.ID, sa.ID) },
		"CreateAPIKey for B's SA": func() error {
			_, err := f.store.CreateAPIKey(c, a.Tenant.ID, newKey(t, "", sa.ID))
			return err
		},
		"CreateAPIKey for B's owner": func() error {
			_, err := f.store.CreateAPIKey(c, a.Tenant.ID, newKey(t, b.Owner.UserID, ""))
			return err
		},
		"RevokeAPIKey": func() error { _, err := f.store.RevokeAPIKey(c, a.Tenant.ID, b.Key.ID, nil); return err },
		"AuthenticateAPIKey": func() error {
			_, err := f.store.AuthenticateAPIKey(c, a.Tenant.ID, b.Key.LookupID, time.Now(), func([]byte) bool { return true })
			return err
		},
		"MemberRole": func() error { _, _, err := f.store.MemberRole(c, a.Tenant.ID, b.Owner.UserID); return err },
		"UpdateTenant": func() error {
			_, err := f.store.UpdateTenant(c, uuid.NewString(), func(*store.Tenant) (*store.Event, error) { return nil, nil })
			return err
		},
		"TenantStatus": func() error { _, err := f.store.TenantStatus(c, uuid.NewString()); return err },
		"malformed id": func() error { _, err := f.store.GetMember(c, a.Tenant.ID, "not-a-uuid"); return err },
	}
	for name, call := range cases {
		t.Run(name, func(t *testing.T) {
			if err := call(); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("got %v, want ErrNotFound", err)
			}
		})
	}
	// B is untouched.
	if _, err := f.store.GetMember(c, b.Tenant.ID, b.Owner.UserID); err != nil {
		t.Fatalf("B's owner: %v", err)
	}
	if _, err := f.store.GetServiceAccount(c, b.Tenant.ID, sa.ID); err != nil {
		t.Fatalf("B's service account: %v", err)
	}
	ms, _, err := f.store.ListMembers(c, a.Tenant.ID, store.Page{Size: 100})
	if err != nil || len(ms) != 1 || ms[0].UserID != a.Owner.UserID {
		t.Fatalf("A's members = %+v, %v; want only A's owner", ms, err)
	}
}

func TestLastOwner(t *testing.T) {
	f := newFixture(t)
	c := ctx(t)
	a := f.createTenant(t)
	if err := f.store.RemoveMember(c, a.Tenant.ID, a.Owner.UserID, nil); !errors.Is(err, store.ErrLastOwner) {
		t.Fatalf("remove last owner: %v, want ErrLastOwner", err)
	}
	if _, err := f.store.UpdateMemberRole(c, a.Tenant.ID, a.Owner.UserID, authz.RoleAdmin, nil); !errors.Is(err, store.ErrLastOwner) {
		t.Fatalf("demote last owner: %v, want ErrLastOwner", err)
	}
	// Two owners demoting each other at once: exactly one succeeds.
	second, err := f.store.AddMember(c, a.Tenant.ID, store.NewMember{UserID: uuid.NewString(), Email: "second@example.com", Role: authz.RoleOwner})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, id := range []string{a.Owner.UserID, second.UserID} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = f.store.UpdateMemberRole(c, a.Tenant.ID, id, authz.RoleMember, nil)
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, store.ErrLastOwner):
			t.Fatalf("concurrent demotion: %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d concurrent demotions succeeded, want exactly 1 (errors %v)", ok, errs)
	}
}

func TestRemoveMemberRevokesKeysAndWritesOneEvent(t *testing.T) {
	f := newFixture(t)
	c := ctx(t)
	a := f.createTenant(t)
	m, err := f.store.AddMember(c, a.Tenant.ID, store.NewMember{UserID: uuid.NewString(), Email: "Bob@Example.com", Role: authz.RoleMember})
	if err != nil {
		t.Fatal(err)
	}
	k, err := f.store.CreateAPIKey(c, a.Tenant.ID, newKey(t, m.UserID, ""))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.AddMember(c, a.Tenant.ID, store.NewMember{UserID: uuid.NewString(), Email: "bob@example.COM", Role: authz.RoleViewer}); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("same address, other case: %v, want ErrAlreadyExists", err)
	}
	if err := f.store.RemoveMember(c, a.Tenant.ID, m.UserID, nil); err != nil {
		t.Fatal(err)
	}
	var revoked bool
	var events int
	super := f.db.SuperPool(t)
	if err := super.QueryRow(c, "SELECT revoked_at IS NOT NULL FROM api_keys WHERE id = $1", k.ID).Scan(&revoked); err != nil || !revoked {
		t.Fatalf("key revoked = %v, %v", revoked, err)
	}
	if err := super.QueryRow(c, `SELECT count(*) FROM outbox WHERE tenant_id = $1 AND event_type = 'member.removed'
		AND payload = jsonb_build_object('tenant_id', $1::text, 'user_id', $2::text)`, a.Tenant.ID, m.UserID).Scan(&events); err != nil || events != 1 {
		t.Fatalf("member.removed events = %d, %v; want 1", events, err)
	}
	// Re-adding the address brings back the same user, with the old key still revoked.
	again, err := f.store.AddMember(c, a.Tenant.ID, store.NewMember{UserID: uuid.NewString(), Email: "bob@example.com", Role: authz.RoleViewer})
	if err != nil || again.UserID != m.UserID {
		t.Fatalf("re-add: %+v, %v; want user %s", again, err, m.UserID)
	}
	if _, err := f.store.AuthenticateAPIKey(c, a.Tenant.ID, k.LookupID, time.Now(), func([]byte) bool { return true }); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("revoked key authenticates: %v", err)
	}
}

func TestPagination(t *testing.T) {
	f := newFixture(t)
	c := ctx(t)
	a := f.createTenant(t)
	for i := range 4 {
		if _, err := f.store.AddMember(c, a.Tenant.ID, store.NewMember{UserID: uuid.NewString(), Email: uuid.NewString()[:8] + "@example.com", Role: authz.RoleViewer}); err != nil {
			t.Fatal(i, err)
		}
	}
	var all []store.Member
	page := store.Page{Size: 2}
	for range 5 {
		ms, next, err := f.store.ListMembers(c, a.Tenant.ID, page)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, ms...)
		if next == nil {
			break
		}
		page.After = next
	}
	if len(all) != 5 || all[0].UserID != a.Owner.UserID {
		t.Fatalf("paged %d members (first %s), want 5 starting with the owner", len(all), all[0].UserID)
	}
	seen := map[string]bool{}
	for _, m := range all {
		if seen[m.UserID] {
			t.Fatalf("member %s listed twice", m.UserID)
		}
		seen[m.UserID] = true
	}
}

func isCode(err error, code string) bool {
	var pe interface{ SQLState() string }
	return errors.As(err, &pe) && pe.SQLState() == code
}
