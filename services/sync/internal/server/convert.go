package server

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	syncv1 "github.com/bulkhead/bulkhead/gen/bulkhead/sync/v1"
	"github.com/bulkhead/bulkhead/services/sync/internal/store"
)

func modeFromProto(m syncv1.SyncMode) store.Mode {
	switch m {
	case syncv1.SyncMode_SYNC_MODE_FULL:
		return store.ModeFull
	case syncv1.SyncMode_SYNC_MODE_INCREMENTAL:
		return store.ModeIncremental
	}
	return ""
}

func modeToProto(m store.Mode) syncv1.SyncMode {
	if m == store.ModeFull {
		return syncv1.SyncMode_SYNC_MODE_FULL
	}
	return syncv1.SyncMode_SYNC_MODE_INCREMENTAL
}

func runStatusToProto(s store.RunStatus) syncv1.RunStatus {
	switch s {
	case store.RunRunning:
		return syncv1.RunStatus_RUN_STATUS_RUNNING
	case store.RunSucceeded:
		return syncv1.RunStatus_RUN_STATUS_SUCCEEDED
	case store.RunFailed:
		return syncv1.RunStatus_RUN_STATUS_FAILED
	}
	return syncv1.RunStatus_RUN_STATUS_UNSPECIFIED
}

func runToProto(r store.Run) *syncv1.Run {
	return &syncv1.Run{
		RunNumber: r.Number, Status: runStatusToProto(r.Status), Full: r.Full,
		Added: r.Added, Updated: r.Updated, Deleted: r.Deleted, Pages: r.Pages,
		StartTime: ts(r.StartedAt), EndTime: ts(r.FinishedAt),
	}
}

func syncToProto(s *store.Sync) *syncv1.Sync {
	out := &syncv1.Sync{
		TenantId: s.TenantID, SyncId: s.ID, ConnectionId: s.ConnectionID, Integration: s.Integration,
		Model: s.Model, Mode: modeToProto(s.Mode), Frequency: durationpb.New(s.Frequency),
		State: syncv1.SyncState_SYNC_STATE_ACTIVE, LastError: s.LastError,
		CreateTime: timestamppb.New(s.CreatedAt), UpdateTime: timestamppb.New(s.UpdatedAt),
	}
	if s.State == store.StatePaused {
		out.State = syncv1.SyncState_SYNC_STATE_PAUSED
	} else {
		out.NextRunTime = ts(s.NextRunAt)
	}
	if s.Running() {
		out.CurrentRun = runToProto(s.Run)
	}
	if s.Last.Number > 0 {
		out.LastRun = runToProto(s.Last)
	}
	if s.Checkpoint != nil {
		out.Checkpoint = s.Checkpoint.UTC().Format("2006-01-02T15:04:05.999999Z07:00")
	}
	return out
}

func actionToProto(a store.Action) syncv1.ChangeAction {
	switch a {
	case store.ActionAdded:
		return syncv1.ChangeAction_CHANGE_ACTION_ADDED
	case store.ActionUpdated:
		return syncv1.ChangeAction_CHANGE_ACTION_UPDATED
	case store.ActionDeleted:
		return syncv1.ChangeAction_CHANGE_ACTION_DELETED
	}
	return syncv1.ChangeAction_CHANGE_ACTION_UNSPECIFIED
}

// recordToProto renders a record; its payload is re-canonicalised (jsonb's text form orders
// keys by length and adds spaces).
func recordToProto(r store.Record) (*syncv1.Record, error) {
	dec := json.NewDecoder(bytes.NewReader(r.Payload))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("server: stored payload: %w", err)
	}
	payload, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("server: stored payload: %w", err)
	}
	return &syncv1.Record{
		ConnectionId: r.ConnectionID, Model: r.Model, ExternalId: r.ExternalID, Action: actionToProto(r.Action),
		PayloadJson: string(payload), ContentHash: hex.EncodeToString(r.ContentHash),
		ProviderUpdateTime: ts(r.ProviderUpdatedAt), ChangeTime: timestamppb.New(r.ChangedAt), DeleteTime: ts(r.DeletedAt),
	}, nil
}
