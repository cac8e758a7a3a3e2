package server

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	syncv1 "github.com/bulkhead/bulkhead/gen/bulkhead/sync/v1"
	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/services/sync/internal/engine"
	"github.com/bulkhead/bulkhead/services/sync/internal/store"
)

// watchBatch bounds one WatchChanges message.
const watchBatch = 500

// WatchChanges streams the feed from the request's cursor, then new changes as they commit.
func (s *Syncs) WatchChanges(req *syncv1.WatchChangesRequest, stream syncv1.SyncService_WatchChangesServer) error {
	ctx := stream.Context()
	sc, err := scope(ctx, req.GetTenantId(), "sync")
	if err != nil {
		return err
	}
	if req.GetModel() != "" && req.GetConnectionId() == "" {
		return apierr.InvalidArgument("model", "model requires connection_id")
	}
	after, err := store.DecodeCursor(req.GetCursor())
	if err != nil {
		return apierr.InvalidArgument("cursor", "cursor is not one this service returned")
	}
	if req.GetModel() != "" {
		if _, err := s.getSync(ctx, sc, req.GetConnectionId(), req.GetModel()); err != nil {
			return err
		}
	}
	// Subscribe before the first read, so a change committed in between is not waited for.
	wake, unsubscribe := s.hub.Subscribe(sc.TenantID)
	defer unsubscribe()
	keepAlive := time.NewTimer(s.keepAlive)
	defer keepAlive.Stop()
	for {
		var recs []store.Record
		err := s.db.InTx(ctx, sc, func(tx pgx.Tx) error {
			var err error
			recs, err = store.ListFeed(ctx, tx, sc.TenantID, store.FeedQuery{
				ConnectionID: req.GetConnectionId(), Model: req.GetModel(), After: after, Limit: watchBatch,
			})
			return err
		})
		if err != nil {
			return err
		}
		if len(recs) > 0 {
			out, err := s.recordsToProto(ctx, sc.TenantID, recs)
			if err != nil {
				return err
			}
			msg := &syncv1.WatchChangesResponse{Records: out}
			after = recs[len(recs)-1].Seq
			msg.Cursor = store.EncodeCursor(after)
			if err := stream.Send(msg); err != nil {
				return err
			}
			keepAlive.Reset(s.keepAlive)
			if len(recs) == watchBatch {
				continue // more is waiting
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-keepAlive.C:
			// Nothing announced: send a keep-alive with the cursor, and look anyway (a
			// notification may have been lost while the listener reconnected).
			if err := stream.Send(&syncv1.WatchChangesResponse{Cursor: store.EncodeCursor(after)}); err != nil {
				return err
			}
			keepAlive.Reset(s.keepAlive)
		}
	}
}

// Hub fans Postgres notifications of committed changes (engine.NotifyChannel, payload: the
// tenant id) out to the WatchChanges streams of that tenant in this process. One listening
// connection serves every stream; every replica listens, so a change committed by any worker
// reaches every watcher.
type Hub struct {
	pool *pgxpool.Pool
	log  *slog.Logger
	mu   sync.Mutex
	subs map[string]map[chan struct{}]struct{}
}

// NewHub returns a Hub listening through pool (the app role's pool; it holds one connection).
func NewHub(pool *pgxpool.Pool, log *slog.Logger) *Hub {
	return &Hub{pool: pool, log: log, subs: map[string]map[chan struct{}]struct{}{}}
}

// Subscribe returns a channel that receives (coalesced) wake-ups for tenantID's changes.
func (h *Hub) Subscribe(tenantID string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	if h.subs[tenantID] == nil {
		h.subs[tenantID] = map[chan struct{}]struct{}{}
	}
	h.subs[tenantID][ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(h.subs[tenantID], ch)
		if len(h.subs[tenantID]) == 0 {
			delete(h.subs, tenantID)
		}
	}
}

func (h *Hub) wake(tenantID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs[tenantID] {
		select {
		case ch <- struct{}{}:
		default: // a wake-up is already pending
		}
	}
}

// Run listens until ctx ends, reconnecting with a bounded backoff; streams fall back to their
// keep-alive polling while it is disconnected.
func (h *Hub) Run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := h.listen(ctx)
		if ctx.Err() != nil {
			return
		}
		h.log.WarnContext(ctx, "change listener disconnected", "error", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (h *Hub) listen(ctx context.Context) error {
	conn, err := h.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// A connection that was listening must not go back to the pool.
	defer func() { _ = conn.Conn().Close(context.WithoutCancel(ctx)); conn.Release() }()
	if _, err := conn.Exec(ctx, "LISTEN "+engine.NotifyChannel); err != nil {
		return err
	}
	for {
		n, err := conn.Conn().WaitForNotification(ctx)
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		}
		h.wake(n.Payload)
	}
}
