// Package server holds the sync service's thin gRPC handlers: check the request's tenant
// against the verified claims, call the engine or the store in a tenant transaction, map the
// result. Authorization (which permission each RPC needs) is the Policy table; validation runs
// in the interceptor chain before any handler.
package server

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	syncv1 "github.com/bulkhead/bulkhead/gen/bulkhead/sync/v1"
	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/pkg/authz"
	"github.com/bulkhead/bulkhead/pkg/claims"
	"github.com/bulkhead/bulkhead/pkg/grpcserver"
	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/services/sync/internal/engine"
	"github.com/bulkhead/bulkhead/services/sync/internal/seal"
	"github.com/bulkhead/bulkhead/services/sync/internal/store"
)

// Policy is who may call each RPC. Every RPC acts in the caller's tenant (users and service
// accounts); a method missing here is refused.
func Policy() authz.Policy {
	const svc = "/bulkhead.sync.v1.SyncService/"
	p := authz.Policy{
		svc + "StartSync":     {Permission: authz.SyncsManage},
		svc + "PauseSync":     {Permission: authz.SyncsManage},
		svc + "ResumeSync":    {Permission: authz.SyncsManage},
		svc + "TriggerSync":   {Permission: authz.SyncsManage},
		svc + "GetSyncStatus": {Permission: authz.SyncsRead},
		svc + "ListSyncs":     {Permission: authz.SyncsRead},
		svc + "ListRecords":   {Permission: authz.RecordsRead},
		svc + "WatchChanges":  {Permission: authz.RecordsRead},
	}
	// Reflection only describes the API, whose protos are published anyway (grpcurl list).
	for _, m := range grpcserver.ReflectionMethods {
		p[m] = authz.Rule{Public: true}
	}
	return p
}

// Syncs implements SyncService.
type Syncs struct {
	syncv1.UnsafeSyncServiceServer
	engine *engine.Engine
	db     *pgtenant.DB
	hub    *Hub
	// keepAlive is how often WatchChanges sends an empty message when nothing changes, and the
	// longest it waits for a notification before looking anyway.
	keepAlive time.Duration
	// cipher opens sealed sensitive fields for readers of the feed; nil when no broker is
	// configured (then a feed holding sealed records answers FAILED_PRECONDITION).
	cipher seal.Cipher
}

// NewSyncs returns the SyncService handlers; cipher (the vault-broker, may be nil) decrypts
// sensitive fields for ListRecords and WatchChanges.
func NewSyncs(e *engine.Engine, hub *Hub, cipher seal.Cipher, keepAlive time.Duration) *Syncs {
	if keepAlive <= 0 {
		keepAlive = 15 * time.Second
	}
	return &Syncs{engine: e, db: e.DB(), hub: hub, cipher: cipher, keepAlive: keepAlive}
}

// recordsToProto renders records for a reader the policy allowed, their sensitive fields
// decrypted by the broker acting for the tenant (not for the caller: the caller's permission
// was records.read, checked already; the broker answers for svc:sync within the tenant).
func (s *Syncs) recordsToProto(ctx context.Context, tenantID string, recs []store.Record) ([]*syncv1.Record, error) {
	payloads := make([][]byte, len(recs))
	for i, r := range recs {
		payloads[i] = r.Payload
	}
	if err := seal.OpenAll(ctx, s.cipher, tenantID, payloads); err != nil {
		switch status.Code(err) {
		case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted:
			return nil, apierr.Unavailable("vault-broker", 0).WithCause(err)
		case codes.Canceled:
			return nil, err
		}
		// The tenant's key is gone (deprovisioned: crypto-shredded) or no broker is configured:
		// asking again will not help.
		return nil, apierr.FailedPrecondition("sealed_fields_unreadable", "the records' sensitive fields cannot be decrypted").WithCause(err)
	}
	out := make([]*syncv1.Record, len(recs))
	for i, r := range recs {
		r.Payload = payloads[i]
		pr, err := recordToProto(r)
		if err != nil {
			return nil, apierr.Internal(err)
		}
		out[i] = pr
	}
	return out, nil
}

var _ syncv1.SyncServiceServer = (*Syncs)(nil)

// scope returns the transaction scope of the caller's tenant. A request naming another tenant
// answers NotFound, exactly like a sync that does not exist.
func scope(ctx context.Context, tenantID, resource string) (pgtenant.Scope, error) {
	c, ok := claims.FromContext(ctx)
	if !ok || c.TenantID == "" {
		return pgtenant.Scope{}, apierr.Unauthenticated("missing credentials")
	}
	if !strings.EqualFold(c.TenantID, tenantID) {
		return pgtenant.Scope{}, apierr.NotFound(resource)
	}
	return pgtenant.Scope{TenantID: c.TenantID}, nil
}

func (s *Syncs) StartSync(ctx context.Context, req *syncv1.StartSyncRequest) (*syncv1.StartSyncResponse, error) {
	sc, err := scope(ctx, req.GetTenantId(), "sync")
	if err != nil {
		return nil, err
	}
	spec := engine.StartSpec{
		ConnectionID: req.GetConnectionId(), Integration: req.GetIntegration(), Model: req.GetModel(),
		Mode: modeFromProto(req.GetMode()),
	}
	if req.GetFrequency() != nil {
		spec.Frequency = req.GetFrequency().AsDuration().Truncate(time.Second)
	}
	out, err := s.engine.StartSync(ctx, sc, spec)
	if err != nil {
		return nil, err
	}
	return &syncv1.StartSyncResponse{Sync: syncToProto(out)}, nil
}

func (s *Syncs) PauseSync(ctx context.Context, req *syncv1.PauseSyncRequest) (*syncv1.PauseSyncResponse, error) {
	sc, err := scope(ctx, req.GetTenantId(), "sync")
	if err != nil {
		return nil, err
	}
	out, err := s.engine.PauseSync(ctx, sc, req.GetConnectionId(), req.GetModel())
	if err != nil {
		return nil, err
	}
	return &syncv1.PauseSyncResponse{Sync: syncToProto(out)}, nil
}

func (s *Syncs) ResumeSync(ctx context.Context, req *syncv1.ResumeSyncRequest) (*syncv1.ResumeSyncResponse, error) {
	sc, err := scope(ctx, req.GetTenantId(), "sync")
	if err != nil {
		return nil, err
	}
	out, err := s.engine.ResumeSync(ctx, sc, req.GetConnectionId(), req.GetModel())
	if err != nil {
		return nil, err
	}
	return &syncv1.ResumeSyncResponse{Sync: syncToProto(out)}, nil
}

func (s *Syncs) TriggerSync(ctx context.Context, req *syncv1.TriggerSyncRequest) (*syncv1.TriggerSyncResponse, error) {
	sc, err := scope(ctx, req.GetTenantId(), "sync")
	if err != nil {
		return nil, err
	}
	out, err := s.engine.TriggerSync(ctx, sc, req.GetConnectionId(), req.GetModel(), req.GetFullResync())
	if err != nil {
		return nil, err
	}
	return &syncv1.TriggerSyncResponse{Sync: syncToProto(out)}, nil
}

func (s *Syncs) GetSyncStatus(ctx context.Context, req *syncv1.GetSyncStatusRequest) (*syncv1.GetSyncStatusResponse, error) {
	sc, err := scope(ctx, req.GetTenantId(), "sync")
	if err != nil {
		return nil, err
	}
	out, err := s.getSync(ctx, sc, req.GetConnectionId(), req.GetModel())
	if err != nil {
		return nil, err
	}
	return &syncv1.GetSyncStatusResponse{Sync: syncToProto(out)}, nil
}

func (s *Syncs) getSync(ctx context.Context, sc pgtenant.Scope, connectionID, model string) (*store.Sync, error) {
	var out *store.Sync
	err := s.db.InTx(ctx, sc, func(tx pgx.Tx) error {
		var err error
		out, err = store.GetSync(ctx, tx, sc.TenantID, connectionID, model, false)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, apierr.NotFound("sync")
	}
	return out, err
}

func (s *Syncs) ListSyncs(ctx context.Context, req *syncv1.ListSyncsRequest) (*syncv1.ListSyncsResponse, error) {
	sc, err := scope(ctx, req.GetTenantId(), "sync")
	if err != nil {
		return nil, err
	}
	size := int(req.GetPageSize())
	if size == 0 {
		size = 100
	}
	afterCreated, afterID, err := decodePageToken(req.GetPageToken())
	if err != nil {
		return nil, err
	}
	var list []*store.Sync
	err = s.db.InTx(ctx, sc, func(tx pgx.Tx) error {
		var err error
		list, err = store.ListSyncs(ctx, tx, sc.TenantID, req.GetConnectionId(), afterCreated, afterID, size+1)
		return err
	})
	if err != nil {
		return nil, err
	}
	resp := &syncv1.ListSyncsResponse{}
	if len(list) > size {
		list = list[:size]
		last := list[size-1]
		resp.NextPageToken = encodePageToken(last.CreatedAt, last.ID)
	}
	for _, x := range list {
		resp.Syncs = append(resp.Syncs, syncToProto(x))
	}
	return resp, nil
}

// ListRecords pages the change feed of one sync.
func (s *Syncs) ListRecords(ctx context.Context, req *syncv1.ListRecordsRequest) (*syncv1.ListRecordsResponse, error) {
	sc, err := scope(ctx, req.GetTenantId(), "sync")
	if err != nil {
		return nil, err
	}
	after, err := store.DecodeCursor(req.GetCursor())
	if err != nil {
		return nil, apierr.InvalidArgument("cursor", "cursor is not one this service returned")
	}
	size := int(req.GetPageSize())
	if size == 0 {
		size = 100
	}
	q := store.FeedQuery{ConnectionID: req.GetConnectionId(), Model: req.GetModel(), After: after, Limit: size + 1}
	if req.GetModifiedAfter() != nil {
		t := req.GetModifiedAfter().AsTime()
		q.ModifiedAfter = &t
	}
	var recs []store.Record
	err = s.db.InTx(ctx, sc, func(tx pgx.Tx) error {
		// The sync must exist: a feed of nothing and a feed of another tenant's sync look alike
		// otherwise, and NotFound is the documented answer for both.
		if _, err := store.GetSync(ctx, tx, sc.TenantID, req.GetConnectionId(), req.GetModel(), false); err != nil {
			return err
		}
		var err error
		recs, err = store.ListFeed(ctx, tx, sc.TenantID, q)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, apierr.NotFound("sync")
	}
	if err != nil {
		return nil, err
	}
	resp := &syncv1.ListRecordsResponse{NextCursor: store.EncodeCursor(after)}
	if len(recs) > size {
		recs, resp.HasMore = recs[:size], true
	}
	if resp.Records, err = s.recordsToProto(ctx, sc.TenantID, recs); err != nil {
		return nil, err
	}
	if len(recs) > 0 {
		resp.NextCursor = store.EncodeCursor(recs[len(recs)-1].Seq)
	}
	return resp, nil
}

// pageTokenPrefix versions ListSyncs page tokens.
const pageTokenPrefix = "s1|"

func encodePageToken(created time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, "%s%d|%s", pageTokenPrefix, created.UnixMicro(), id))
}

func decodePageToken(tok string) (time.Time, string, error) {
	if tok == "" {
		return time.Time{}, "", nil
	}
	bad := apierr.InvalidArgument("page_token", "page_token is not one this service returned")
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || !strings.HasPrefix(string(raw), pageTokenPrefix) {
		return time.Time{}, "", bad
	}
	var micros int64
	var id string
	parts := strings.SplitN(strings.TrimPrefix(string(raw), pageTokenPrefix), "|", 2)
	if len(parts) != 2 {
		return time.Time{}, "", bad
	}
	if _, err := fmt.Sscan(parts[0], &micros); err != nil {
		return time.Time{}, "", bad
	}
	id = parts[1]
	if _, err := uuid.Parse(id); err != nil {
		return time.Time{}, "", bad
	}
	return time.UnixMicro(micros), id, nil
}

func ts(t *time.Time) *timestamppb.Timestamp {
	if t == nil {
		return nil
	}
	return timestamppb.New(*t)
}
