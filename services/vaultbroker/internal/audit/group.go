package audit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/bulkhead/bulkhead/pkg/pgtenant"
)

// Group is a group-committing front of a Store: events of one tenant that arrive while that
// tenant's previous write is in flight are written together, in one multi-row INSERT and one
// transaction, when it ends. Each caller still returns only once its own row is committed (or
// its write failed), so the guarantee of Store.Append holds row by row. There is no timer: a
// lone event is written at once, and batching happens only under concurrency, where it saves
// a transaction (and a commit) per row.
//
// Each batch holds one tenant's rows and runs in a transaction scoped to that tenant, exactly
// as Store.Append does: row-level security checks every row against the tenant of its own
// transaction, and rows of different tenants never share one.
type Group struct {
	store   *Store
	max     int
	timeout time.Duration

	mu     sync.Mutex
	queues map[string]*tenantQueue
}

type tenantQueue struct {
	waiting []*pending
}

type pending struct {
	ev   Event
	done chan error
}

// GroupConfig configures a Group.
type GroupConfig struct {
	// MaxBatch bounds the rows of one INSERT (default 64).
	MaxBatch int
	// Timeout bounds one batch's write (default 5s); it runs on its own context, since it
	// carries several callers' rows.
	Timeout time.Duration
}

// NewGroup returns a Group writing through store.
func NewGroup(store *Store, cfg GroupConfig) *Group {
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 64
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	return &Group{store: store, max: cfg.MaxBatch, timeout: cfg.Timeout, queues: map[string]*tenantQueue{}}
}

// Append queues ev and returns when its row is committed (nil) or could not be written. A
// caller waiting behind another write whose ctx ends first gets ctx's error, and its row may
// still be committed afterwards — never the other way round: nil always means committed.
// Writes run on their own context bounded by GroupConfig.Timeout, since a batch carries
// several callers' rows.
func (g *Group) Append(ctx context.Context, ev Event) error {
	if err := ev.check(); err != nil {
		return err
	}
	if ev.OccurredAt.IsZero() {
		ev.OccurredAt = time.Now()
	}
	p := &pending{ev: ev, done: make(chan error, 1)}
	g.mu.Lock()
	q, busy := g.queues[ev.TenantID]
	if !busy {
		q = &tenantQueue{}
		g.queues[ev.TenantID] = q
	}
	q.waiting = append(q.waiting, p)
	g.mu.Unlock()
	if !busy {
		// This caller leads: it writes the first batch (its own row, usually alone) on its
		// own goroutine and hands what queued meanwhile to a drain.
		g.drain(ev.TenantID, q, true)
	}
	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("audit: append %s for tenant %s: %w", ev.Operation, ev.TenantID, ctx.Err())
	}
}

// drain writes tenant's queue batch by batch until it is empty, then forgets the queue, so
// that the next event leads a new one. A leading caller writes one batch and leaves the rest
// to a goroutine, so that it does not wait for rows queued after its own.
func (g *Group) drain(tenant string, q *tenantQueue, leader bool) {
	for wrote := false; ; wrote = true {
		g.mu.Lock()
		n := min(len(q.waiting), g.max)
		if n == 0 {
			delete(g.queues, tenant)
			g.mu.Unlock()
			return
		}
		if leader && wrote {
			g.mu.Unlock()
			go g.drain(tenant, q, false)
			return
		}
		batch := q.waiting[:n:n]
		q.waiting = q.waiting[n:]
		g.mu.Unlock()
		g.write(tenant, batch)
	}
}

func (g *Group) write(tenant string, batch []*pending) {
	ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
	defer cancel()
	if len(batch) == 1 {
		batch[0].done <- g.store.Append(ctx, batch[0].ev)
		return
	}
	evs := make([]Event, len(batch))
	for i, p := range batch {
		evs[i] = p.ev
	}
	err := g.store.appendMany(ctx, tenant, evs)
	if err == nil {
		for _, p := range batch {
			p.done <- nil
		}
		return
	}
	if errors.Is(err, context.DeadlineExceeded) {
		for _, p := range batch {
			p.done <- err
		}
		return
	}
	// The batch rolled back as a whole: write the rows one by one, so that a row the table
	// refuses fails only its own caller.
	for _, p := range batch {
		p.done <- g.store.Append(ctx, p.ev)
	}
}

const insertManySQL = `INSERT INTO audit_events (tenant_id, occurred_at, request_id, operation, outcome,
	reason, subject, caller_service, actor, token_id, connection_id, version)
SELECT $1::uuid, * FROM unnest($2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[],
	$7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::bigint[])`

// appendMany writes evs, all of tenant, in one statement and one transaction scoped to tenant.
func (s *Store) appendMany(ctx context.Context, tenant string, evs []Event) error {
	n := len(evs)
	at := make([]time.Time, n)
	req, op, out, reason, subj := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	caller, actor, tok, conn := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	version := make([]*int64, n)
	for i := range evs {
		e := &evs[i]
		if e.TenantID != tenant {
			return fmt.Errorf("audit: batch of tenant %s holds an event of %s", tenant, e.TenantID)
		}
		at[i], req[i], op[i], out[i], reason[i], subj[i] = e.OccurredAt, e.RequestID, e.Operation, e.Outcome, e.Reason, e.Subject
		caller[i], actor[i], tok[i], conn[i] = e.CallerService, e.Actor, e.TokenID, e.ConnectionID
		if e.Version > 0 {
			version[i] = &e.Version
		}
	}
	_, err := pgtenant.Exec(ctx, s.db, pgtenant.Scope{TenantID: tenant}, insertManySQL,
		tenant, at, req, op, out, reason, subj, caller, actor, tok, conn, version)
	if err != nil {
		return fmt.Errorf("audit: append %d events for tenant %s: %w", n, tenant, err)
	}
	return nil
}
