package server_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	brokerv1 "github.com/bulkhead/bulkhead/gen/bulkhead/vaultbroker/v1"
	"github.com/bulkhead/bulkhead/services/identity/identitytest"
	"github.com/bulkhead/bulkhead/services/vaultbroker/internal/audit"
)

// TestAuditTrail checks that successes and refusals — including a tenant mismatch and an end
// user's token refused by authz — land in the right tenant's audit log with who, what and how,
// and that no row anywhere holds a secret value, a plaintext, a ciphertext or a token.
func TestAuditTrail(t *testing.T) {
	f := newFixture(t)
	const secret, plain = "s3cr3t-access-token-value", "plain-secret-row"
	ctxA := metadata.AppendToOutgoingContext(f.asA(t), "x-request-id", "req-audit-put")
	conn := newID()
	f.put(t, ctxA, f.a.ID, conn, map[string]string{"access_token": secret}, 0)
	if _, err := f.sync.GetCredential(f.asA(t), &brokerv1.GetCredentialRequest{TenantId: f.a.ID, ConnectionId: conn}); err != nil {
		t.Fatal(err)
	}
	enc, err := f.conn.Encrypt(f.asA(t), &brokerv1.EncryptRequest{TenantId: f.a.ID, Plaintext: []byte(plain)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.sync.Decrypt(f.asA(t), &brokerv1.DecryptRequest{TenantId: f.a.ID, Ciphertext: enc.GetCiphertext()}); err != nil {
		t.Fatal(err)
	}
	// Refusals: B's owner through the connection service naming A's credential; A's owner
	// directly (authz); the sync service writing (authz).
	_, err = f.conn.GetCredential(f.asB(t), &brokerv1.GetCredentialRequest{TenantId: f.a.ID, ConnectionId: conn})
	wantCode(t, err, codes.NotFound)
	_, err = f.direct.GetCredential(f.asA(t), &brokerv1.GetCredentialRequest{TenantId: f.a.ID, ConnectionId: conn})
	wantCode(t, err, codes.PermissionDenied)
	_, err = f.sync.PutCredential(f.asA(t), &brokerv1.PutCredentialRequest{TenantId: f.a.ID, ConnectionId: conn, Data: map[string]string{"k": secret}, ExpectedVersion: 1})
	wantCode(t, err, codes.PermissionDenied)

	owner := "user:" + f.a.OwnerID
	type row struct{ op, outcome, reason, subject, caller, conn string }
	key := func(e audit.Event) row {
		return row{e.Operation, e.Outcome, e.Reason, e.Subject, e.CallerService, e.ConnectionID}
	}
	evsA := auditRows(t, f.b, f.a.ID)
	var gotA []row
	for _, e := range evsA {
		gotA = append(gotA, key(e))
		if e.TenantID != f.a.ID || e.RequestID == "" || e.OccurredAt.IsZero() {
			t.Errorf("incomplete row %+v", e)
		}
		if e.Subject == owner && e.TokenID == "" {
			t.Errorf("row without the token id: %+v", e)
		}
	}
	wantA := []row{
		{"ProvisionTenant", "OK", "", "svc:provisioner", "svc:provisioner", ""},
		{"PutCredential", "OK", "", owner, "svc:connection", conn},
		{"GetCredential", "OK", "", owner, "svc:sync", conn},
		{"Encrypt", "OK", "", owner, "svc:connection", ""},
		{"Decrypt", "OK", "", owner, "svc:sync", ""},
		{"GetCredential", "PERMISSION_DENIED", "permission_denied", owner, "", ""},
		{"PutCredential", "PERMISSION_DENIED", "permission_denied", owner, "svc:sync", ""},
	}
	for _, w := range wantA {
		if !slices.Contains(gotA, w) {
			t.Errorf("tenant A's audit log lacks %+v; it has:\n%s", w, dump(gotA))
		}
	}
	for _, e := range evsA {
		if e.Operation == "PutCredential" && e.Outcome == "OK" && (e.Version != 1 || e.RequestID != "req-audit-put") {
			t.Errorf("put row: version %d request id %q, want 1 and req-audit-put", e.Version, e.RequestID)
		}
	}
	// The mismatch is filed under the tenant of the caller who tried it, not under A.
	var gotB []row
	for _, e := range auditRows(t, f.b, f.bt.ID) {
		gotB = append(gotB, key(e))
	}
	mismatch := row{"GetCredential", "NOT_FOUND", "tenant_mismatch", "user:" + f.bt.OwnerID, "svc:connection", conn}
	if !slices.Contains(gotB, mismatch) {
		t.Errorf("tenant B's audit log lacks the mismatch %+v; it has:\n%s", mismatch, dump(gotB))
	}
	if slices.ContainsFunc(gotA, func(r row) bool { return r.reason == "tenant_mismatch" }) {
		t.Error("the mismatch was filed under the tenant it targeted")
	}

	// No secret anywhere in the table (read as a superuser, across tenants).
	rows, err := f.b.DB.SuperPool(t).Query(context.Background(), "SELECT row_to_json(a)::text FROM audit_events a")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var js string
		if err := rows.Scan(&js); err != nil {
			t.Fatal(err)
		}
		n++
		for _, s := range []string{secret, plain, enc.GetCiphertext(), f.tokA, f.tokB} {
			if strings.Contains(js, s) {
				t.Fatalf("audit row holds a secret value: %s", js)
			}
		}
	}
	if err := rows.Err(); err != nil || n < len(wantA)+1 {
		t.Fatalf("read %d audit rows (err %v)", n, err)
	}
}

func dump[T any](rows []T) string {
	var b strings.Builder
	for _, r := range rows {
		fmt.Fprintf(&b, "  %+v\n", r)
	}
	return b.String()
}

// TestAuditFailClosed breaks audit writes for real (the app role loses INSERT on the table):
// a secret read must then fail with UNAVAILABLE and return nothing, while a write — already
// done in Vault — succeeds and the lost event is counted and logged.
func TestAuditFailClosed(t *testing.T) {
	f := newFixture(t)
	ctx := f.asA(t)
	conn := newID()
	f.put(t, ctx, f.a.ID, conn, map[string]string{"access_token": "at"}, 0)
	enc, err := f.conn.Encrypt(ctx, &brokerv1.EncryptRequest{TenantId: f.a.ID, Plaintext: []byte("p")})
	if err != nil {
		t.Fatal(err)
	}
	owner := f.b.DB.OwnerPool(t)
	app := f.b.DB.Roles.App
	if _, err := owner.Exec(context.Background(), "REVOKE INSERT ON audit_events FROM "+app); err != nil {
		t.Fatal(err)
	}
	failuresBefore := f.b.AuditStats().Failures

	get, err := f.conn.GetCredential(ctx, &brokerv1.GetCredentialRequest{TenantId: f.a.ID, ConnectionId: conn})
	wantCode(t, err, codes.Unavailable)
	if get != nil || retryDelay(err) <= 0 {
		t.Fatalf("unaudited read returned %v (retry delay %v)", get, retryDelay(err))
	}
	dec, err := f.conn.Decrypt(ctx, &brokerv1.DecryptRequest{TenantId: f.a.ID, Ciphertext: enc.GetCiphertext()})
	wantCode(t, err, codes.Unavailable)
	if dec != nil {
		t.Fatalf("unaudited decrypt returned %v", dec)
	}
	put, err := f.conn.PutCredential(ctx, &brokerv1.PutCredentialRequest{TenantId: f.a.ID, ConnectionId: conn, Data: map[string]string{"access_token": "at2"}, ExpectedVersion: 1})
	if err != nil || put.GetVersion() != 2 {
		t.Fatalf("write with a failing audit log: %v, %v; want version 2 (fail open, logged)", put, err)
	}
	if got := f.b.AuditStats().Failures - failuresBefore; got != 3 {
		t.Fatalf("audit failures counted: %d, want 3", got)
	}

	if _, err := owner.Exec(context.Background(), "GRANT INSERT ON audit_events TO "+app); err != nil {
		t.Fatal(err)
	}
	if _, err := f.conn.GetCredential(ctx, &brokerv1.GetCredentialRequest{TenantId: f.a.ID, ConnectionId: conn}); err != nil {
		t.Fatalf("read after the audit log recovered: %v", err)
	}
}

// TestVaultDown stops the broker's (private) Vault: calls fail with UNAVAILABLE and retry
// info, and the audit log records the failures, not successes.
func TestVaultDown(t *testing.T) {
	f := newFixture(t)
	if f.b.Vault.External() || f.b.Mode != "mount" {
		t.Skip("the broker runs on the shared Vault (namespace mode); stopping it would break other tests")
	}
	ctx := f.asA(t)
	conn := newID()
	f.put(t, ctx, f.a.ID, conn, map[string]string{"access_token": "at"}, 0)
	if err := f.b.Vault.Stop(); err != nil {
		t.Fatal(err)
	}
	calls := []struct {
		name string
		call func() error
	}{
		{"GetCredential", func() error {
			_, err := f.conn.GetCredential(ctx, &brokerv1.GetCredentialRequest{TenantId: f.a.ID, ConnectionId: conn})
			return err
		}},
		{"PutCredential", func() error {
			_, err := f.conn.PutCredential(ctx, &brokerv1.PutCredentialRequest{TenantId: f.a.ID, ConnectionId: conn, Data: map[string]string{"a": "b"}, ExpectedVersion: 1})
			return err
		}},
		{"Encrypt", func() error {
			_, err := f.conn.Encrypt(ctx, &brokerv1.EncryptRequest{TenantId: f.a.ID, Plaintext: []byte("x")})
			return err
		}},
		{"ProvisionTenant", func() error {
			pctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_, err := f.b.Client(t, "provisioner").ProvisionTenant(pctx, &brokerv1.ProvisionTenantRequest{TenantId: newID()})
			return err
		}},
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			err := c.call()
			wantCode(t, err, codes.Unavailable)
			if retryDelay(err) <= 0 {
				t.Fatalf("no retry info on %v", err)
			}
		})
	}
	// The audit log (Postgres is up) records the three tenant calls as UNAVAILABLE; the only
	// successes are from before the outage.
	unavailable := map[string]bool{}
	for _, e := range auditRows(t, f.b, f.a.ID) {
		switch e.Outcome {
		case "UNAVAILABLE":
			unavailable[e.Operation] = true
		case "OK":
			if e.Operation != "ProvisionTenant" && !(e.Operation == "PutCredential" && e.Version == 1) {
				t.Errorf("a call during the outage was audited as a success: %+v", e)
			}
		}
	}
	for _, op := range []string{"GetCredential", "PutCredential", "Encrypt"} {
		if !unavailable[op] {
			t.Errorf("no UNAVAILABLE audit row for %s", op)
		}
	}
}

// TestSuspendedTenant: once identity's kill switch is on, the broker refuses the tenant within
// seconds (its tenant-status cache is short), while other tenants are served.
func TestSuspendedTenant(t *testing.T) {
	f := newFixture(t)
	conn := newID()
	f.put(t, f.asA(t), f.a.ID, conn, map[string]string{"access_token": "at"}, 0)
	octx := identitytest.WithToken(context.Background(), f.b.Identity.OperatorToken(t))
	if _, err := identityv1.NewTenantServiceClient(f.b.Identity.Conn(t)).SuspendTenant(octx, &identityv1.SuspendTenantRequest{TenantId: f.a.ID, Reason: "test"}); err != nil {
		t.Fatalf("SuspendTenant: %v", err)
	}
	deadline := time.Now().Add(15 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		_, err := f.conn.GetCredential(f.asA(t), &brokerv1.GetCredentialRequest{TenantId: f.a.ID, ConnectionId: conn})
		if err != nil {
			wantCode(t, err, codes.PermissionDenied)
			if reason(err) != "TENANT_SUSPENDED" {
				t.Fatalf("reason %q, want TENANT_SUSPENDED", reason(err))
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("suspended tenant still served after 15s")
		}
		<-tick.C
	}
	other := newID()
	f.put(t, f.asB(t), f.bt.ID, other, map[string]string{"access_token": "b"}, 0)
}

// TestAuditAccessRows checks the rows of secret-releasing reads: exactly one row per request,
// with its outcome — a successful read, a read Vault fails, a read refused before Vault is
// asked (a tenant mismatch).
func TestAuditAccessRows(t *testing.T) {
	f := newFixture(t)
	conn := newID()
	f.put(t, f.asA(t), f.a.ID, conn, map[string]string{"access_token": "at"}, 0)
	missing := newID()
	tests := []struct {
		name     string
		ctx      context.Context
		tenant   string // whose log holds the rows
		req      *brokerv1.GetCredentialRequest
		code     codes.Code
		outcomes []string // of the request's rows, oldest first
	}{
		{"success", f.asA(t), f.a.ID, &brokerv1.GetCredentialRequest{TenantId: f.a.ID, ConnectionId: conn}, codes.OK, []string{"OK"}},
		{"vault says not found", f.asA(t), f.a.ID, &brokerv1.GetCredentialRequest{TenantId: f.a.ID, ConnectionId: missing}, codes.NotFound, []string{"NOT_FOUND"}},
		{"version vault lacks", f.asA(t), f.a.ID, &brokerv1.GetCredentialRequest{TenantId: f.a.ID, ConnectionId: conn, Version: 7}, codes.NotFound, []string{"NOT_FOUND"}},
		{"tenant mismatch", f.asB(t), f.bt.ID, &brokerv1.GetCredentialRequest{TenantId: f.a.ID, ConnectionId: conn}, codes.NotFound, []string{"NOT_FOUND"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rid := "req-access-" + newID()[:8]
			resp, err := f.conn.GetCredential(metadata.AppendToOutgoingContext(tc.ctx, "x-request-id", rid), tc.req)
			wantCode(t, err, tc.code)
			if (tc.code == codes.OK) != (resp.GetData()["access_token"] == "at") {
				t.Fatalf("response %v with code %v", resp, tc.code)
			}
			var got []string
			evs := auditRows(t, f.b, tc.tenant)
			for i := len(evs) - 1; i >= 0; i-- { // oldest first
				if e := evs[i]; e.RequestID == rid {
					got = append(got, e.Outcome)
					if e.Operation != "GetCredential" || e.ConnectionID != tc.req.GetConnectionId() || e.CallerService != "svc:connection" ||
						// A read of "latest" records the version served.
						(e.Version != tc.req.GetVersion() && (tc.req.GetVersion() != 0 || tc.code != codes.OK)) {
						t.Errorf("row %+v", e)
					}
				}
			}
			if !slices.Equal(got, tc.outcomes) {
				t.Fatalf("rows of the request: %v, want %v", got, tc.outcomes)
			}
		})
	}
}

// TestAuditWriteInterrupted holds the audit table locked (as the superuser) so that a read's
// audit row waits in PostgreSQL after Vault answered, then ends that write: cancelled or its
// connection killed, the read fails UNAVAILABLE and returns no value even though Vault
// answered; once the lock is released instead, the value is returned with its row committed.
func TestAuditWriteInterrupted(t *testing.T) {
	f := newFixture(t)
	conn := newID()
	f.put(t, f.asA(t), f.a.ID, conn, map[string]string{"access_token": "at"}, 0)
	super := f.b.DB.SuperPool(t)
	bg := context.Background()

	// blocked starts a read while the table is locked and returns once its audit INSERT waits
	// on the lock, with the waiting backend's pid, the lock's transaction and the read's result.
	type result struct {
		resp *brokerv1.GetCredentialResponse
		err  error
	}
	blocked := func(t *testing.T, rid string) (int32, pgx.Tx, <-chan result) {
		t.Helper()
		tx, err := super.Begin(bg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tx.Rollback(bg) })
		if _, err := tx.Exec(bg, "LOCK TABLE audit_events IN EXCLUSIVE MODE"); err != nil {
			t.Fatal(err)
		}
		done := make(chan result, 1)
		ctx := metadata.AppendToOutgoingContext(f.asA(t), "x-request-id", rid)
		go func() {
			resp, err := f.conn.GetCredential(ctx, &brokerv1.GetCredentialRequest{TenantId: f.a.ID, ConnectionId: conn})
			done <- result{resp, err}
		}()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		deadline := time.Now().Add(20 * time.Second)
		for {
			var pid int32
			err := super.QueryRow(bg, `SELECT pid FROM pg_stat_activity
				WHERE datname = current_database() AND usename = $1 AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO audit_events%'`,
				f.b.DB.Roles.App).Scan(&pid)
			if err == nil {
				return pid, tx, done
			}
			if !errors.Is(err, pgx.ErrNoRows) {
				t.Fatal(err)
			}
			select {
			case r := <-done:
				t.Fatalf("the read ended before its audit row was written: %v, %v", r.resp, r.err)
			case <-tick.C:
			}
			if time.Now().After(deadline) {
				t.Fatal("the audit INSERT never waited on the lock")
			}
		}
	}

	for _, end := range []string{"pg_cancel_backend", "pg_terminate_backend"} {
		t.Run(end, func(t *testing.T) {
			rid := "req-int-" + newID()[:8]
			pid, tx, done := blocked(t, rid)
			var ok bool
			if err := super.QueryRow(bg, "SELECT "+end+"($1)", pid).Scan(&ok); err != nil || !ok {
				t.Fatalf("%s: %v %v", end, ok, err)
			}
			r := <-done
			wantCode(t, r.err, codes.Unavailable)
			if r.resp != nil {
				t.Fatalf("a read whose audit row failed returned %v", r.resp)
			}
			if err := tx.Rollback(bg); err != nil {
				t.Fatal(err)
			}
			for _, e := range auditRows(t, f.b, f.a.ID) {
				if e.RequestID == rid {
					t.Fatalf("the interrupted write left a row: %+v", e)
				}
			}
		})
	}
	t.Run("released", func(t *testing.T) {
		rid := "req-rel-" + newID()[:8]
		_, tx, done := blocked(t, rid)
		if err := tx.Commit(bg); err != nil {
			t.Fatal(err)
		}
		r := <-done
		if r.err != nil || r.resp.GetData()["access_token"] != "at" {
			t.Fatalf("read after the lock was released: %v, %v", r.resp, r.err)
		}
		n := 0
		for _, e := range auditRows(t, f.b, f.a.ID) {
			if e.RequestID == rid && e.Outcome == "OK" {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%d access rows for the read, want 1", n)
		}
	})
}
