package eventcursor_test

import (
	"context"
	"errors"
	"os"
	"strconv"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/bulkhead/bulkhead/pkg/eventcursor"
	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// feed is the producing side's event log as List sees it: events are their positions 1..n.
type feed struct {
	mu     sync.Mutex
	n      int
	failAt int // Handle fails on this event once, when > 0
}

func (f *feed) list(_ context.Context, after string, pageSize int) ([]int, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	from := 0
	if after != "" {
		var err error
		if from, err = strconv.Atoi(after); err != nil {
			return nil, "", err
		}
	}
	var out []int
	for ev := from + 1; ev <= f.n && len(out) < pageSize; ev++ {
		out = append(out, ev)
	}
	return out, "", nil
}

func newWorker(t *testing.T, db *pgtenant.DB, f *feed, handled *[]int) *eventcursor.Worker[int] {
	t.Helper()
	w, err := eventcursor.New(eventcursor.Config[int]{
		DB: db, Name: "test-consumer", LockKey: 42, PageSize: 2, MaxPages: 3,
		List:   f.list,
		Cursor: strconv.Itoa,
		Handle: func(_ context.Context, ev int) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			if ev == f.failAt {
				f.failAt = 0
				return errors.New("handler failed")
			}
			*handled = append(*handled, ev)
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestConsumesInOrderAndResumesAfterAFailure(t *testing.T) {
	db := testenv.NewDatabase(t, testenv.DBSpec{Name: "eventcursor", Migrations: os.DirFS("testdata/migrations")}).AppDB(t)
	ctx := context.Background()
	f := &feed{n: 9, failAt: 4}
	var handled []int
	w := newWorker(t, db, f, &handled)

	p := w.RunOnce(ctx)
	if p.Err == nil || p.Cursor != "3" || p.Events != 3 {
		t.Fatalf("first pass %+v: want it to stop before event 4 with cursor 3", p)
	}
	// The pass is bounded (3 pages of 2); the next ones go on from the stored cursor.
	for range 3 {
		if p = w.RunOnce(ctx); p.Err != nil {
			t.Fatal(p.Err)
		}
	}
	want := []int{1, 2, 3, 4, 5, 6, 7, 8, 9}
	if len(handled) != len(want) {
		t.Fatalf("handled %v, want %v", handled, want)
	}
	for i := range want {
		if handled[i] != want[i] {
			t.Fatalf("handled %v, want %v (each event once, in order)", handled, want)
		}
	}
	if p.Cursor != "9" {
		t.Fatalf("cursor %q, want 9", p.Cursor)
	}
}

func TestOneReplicaAtATime(t *testing.T) {
	db := testenv.NewDatabase(t, testenv.DBSpec{Name: "eventcursor", Migrations: os.DirFS("testdata/migrations")}).AppDB(t)
	ctx := context.Background()
	f := &feed{n: 1}
	var handled []int
	w := newWorker(t, db, f, &handled)

	// Another replica holds the lock for the whole of this pass.
	err := db.InGlobalTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(42)`); err != nil {
			return err
		}
		if p := w.RunOnce(ctx); p.Locked || p.Events != 0 || p.Err != nil {
			t.Errorf("pass while another replica consumes: %+v, want a skipped pass", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if p := w.RunOnce(ctx); !p.Locked || p.Events != 1 {
		t.Fatalf("pass after the lock was released: %+v", p)
	}
}
