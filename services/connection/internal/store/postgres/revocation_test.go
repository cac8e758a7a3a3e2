package postgres_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/services/connection/internal/store"
)

// TestFailRevocation: a pending revocation given up becomes failed with its reason (cut to the
// column's bound) and a connection.revocation_failed event; an active connection given up at
// once is revoked too (connection.revoked first); failed is final; a failed connection may be
// deleted — by the store and by a raw DELETE under the policy — and the database refuses a
// failed state without a reason, or a reason without the failed state.
func TestFailRevocation(t *testing.T) {
	t.Parallel()
	st, db := newStore(t)
	a := newCast(t, st)
	ctx := ctxT(t)
	revokedAt := time.Now().Add(-time.Hour).Truncate(time.Microsecond)
	locked := func(actor store.Actor, id string, fn func(context.Context, store.Locked) error) {
		t.Helper()
		if err := st.WithLockedConnection(ctx, actor, id, fn); err != nil {
			t.Fatal(err)
		}
	}

	// x's connection: pending, then given up with an over-long reason.
	locked(a.x, a.ofX.ID, func(ctx context.Context, l store.Locked) error {
		_, err := l.Revoke(ctx, store.RevocationPending, time.Now().Add(time.Minute), revokedAt)
		return err
	})
	long := "provider answered 400 " + strings.Repeat("é", 300)
	var failed store.Connection
	locked(a.x, a.ofX.ID, func(ctx context.Context, l store.Locked) error {
		var err error
		failed, err = l.FailRevocation(ctx, long, time.Now())
		return err
	})
	if failed.Status != store.StatusRevoked || failed.RevocationState != store.RevocationFailed ||
		!failed.RevocationNextAt.IsZero() || !failed.RevokedAt.Equal(revokedAt) {
		t.Fatalf("after FailRevocation: %+v", failed)
	}
	if n := utf8.RuneCountInString(failed.RevocationFailureReason); n > store.MaxFailureReason || n == 0 ||
		!utf8.ValidString(failed.RevocationFailureReason) || !strings.HasPrefix(long, failed.RevocationFailureReason) {
		t.Fatalf("reason %q: want a valid prefix of at most %d characters", failed.RevocationFailureReason, store.MaxFailureReason)
	}
	// Final: neither a later give-up nor a revocation changes it.
	locked(a.x, a.ofX.ID, func(ctx context.Context, l store.Locked) error {
		c, err := l.FailRevocation(ctx, "again", time.Now())
		if err == nil && c.RevocationFailureReason != failed.RevocationFailureReason {
			t.Errorf("a second FailRevocation changed the reason to %q", c.RevocationFailureReason)
		}
		if err != nil {
			return err
		}
		c, err = l.Revoke(ctx, store.RevocationConfirmed, time.Time{}, time.Now())
		if err == nil && c.RevocationState != store.RevocationFailed {
			t.Errorf("Revoke moved a failed revocation to %s", c.RevocationState)
		}
		return err
	})
	evs, err := st.Events(ctx, a.tenant, a.ofX.ID)
	if err != nil {
		t.Fatal(err)
	}
	var types []store.EventType
	for _, e := range evs {
		types = append(types, e.Type)
	}
	if n := len(types); n < 2 || types[n-2] != store.EventRevoked || types[n-1] != store.EventRevocationFailed ||
		evs[n-1].Payload["reason"] != failed.RevocationFailureReason {
		t.Fatalf("events %v (last payload %v), want … revoked, revocation_failed with the reason", types, evs[len(evs)-1].Payload)
	}

	// The org connection, active, given up at once: revoked and failed in one step.
	locked(a.admin, a.org.ID, func(ctx context.Context, l store.Locked) error {
		c, err := l.FailRevocation(ctx, "credential missing", revokedAt)
		if err == nil && (c.Status != store.StatusRevoked || c.RevocationState != store.RevocationFailed || !c.RevokedAt.Equal(revokedAt)) {
			t.Errorf("active connection given up: %+v", c)
		}
		return err
	})
	if evs, err = st.Events(ctx, a.tenant, a.org.ID); err != nil {
		t.Fatal(err)
	}
	if n := len(evs); n < 2 || evs[n-2].Type != store.EventRevoked || evs[n-1].Type != store.EventRevocationFailed {
		t.Fatalf("events of the org connection: %v", evs)
	}
	locked(a.admin, a.org.ID, func(ctx context.Context, l store.Locked) error {
		if _, err := l.FailRevocation(ctx, "", time.Now()); err == nil {
			t.Error("FailRevocation without a reason succeeded")
		}
		return nil
	})

	// Deletable: the store deletes x's, and the policy admits a raw DELETE of the org one.
	locked(a.x, a.ofX.ID, func(ctx context.Context, l store.Locked) error { return l.Delete(ctx, time.Now()) })
	tag, err := pgtenant.Exec(ctx, db.AppDB(t), pgtenant.Scope{TenantID: a.tenant}, "DELETE FROM connections WHERE id = $1", a.org.ID)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("raw DELETE of a failed org connection: %v, %d rows", err, tag.RowsAffected())
	}

	// The constraints, below the store: a reason exactly when failed.
	for name, sql := range map[string]string{
		"failed without reason": `UPDATE connections SET status = 'revoked', revocation_state = 'failed', revoked_at = now() WHERE id = $1`,
		"reason without failed": `UPDATE connections SET status = 'revoked', revocation_state = 'confirmed', revoked_at = now(), revocation_failure_reason = 'x' WHERE id = $1`,
		"revoked without time":  `UPDATE connections SET status = 'revoked', revocation_state = 'confirmed' WHERE id = $1`,
	} {
		_, err := pgtenant.Exec(ctx, db.AppDB(t), pgtenant.Scope{TenantID: a.tenant, UserID: a.y.UserID}, sql, a.ofY.ID)
		if pgCode(err) != "23514" {
			t.Errorf("%s: %v, want check_violation", name, err)
		}
	}
	if _, err := st.GetConnection(ctx, a.y, a.ofY.ID); errors.Is(err, store.ErrNotFound) {
		t.Fatal("y's connection disappeared")
	}
}
