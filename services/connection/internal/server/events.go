package server

import (
	"context"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	connectionv1 "github.com/bulkhead/bulkhead/gen/bulkhead/connection/v1"
	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/services/connection/internal/app"
)

type eventServer struct {
	connectionv1.UnsafeEventServiceServer
	events *app.Events
}

// ListEvents is a Bulkhead service's read of the outbox across tenants (Policy: events.read,
// services only, no tenant). The tenant of each event comes from the row, never the request.
func (s *eventServer) ListEvents(ctx context.Context, req *connectionv1.ListEventsRequest) (*connectionv1.ListEventsResponse, error) {
	page, err := s.events.List(ctx, req.GetAfterCursor(), req.GetPageSize(), req.GetTypes())
	if err != nil {
		return nil, err
	}
	out := &connectionv1.ListEventsResponse{NextCursor: page.Next, Events: make([]*connectionv1.Event, len(page.Events))}
	for i, e := range page.Events {
		payload, err := structpb.NewStruct(e.Payload)
		if err != nil {
			return nil, apierr.Internal(err)
		}
		out.Events[i] = &connectionv1.Event{
			TenantId: e.TenantID, EventId: e.ID, Type: string(e.Type), ConnectionId: e.ConnectionID,
			Payload: payload, CreateTime: timestamppb.New(e.CreatedAt), Cursor: e.Cursor.String(),
		}
	}
	return out, nil
}
