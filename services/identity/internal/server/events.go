package server

import (
	"context"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/services/identity/internal/app"
)

type eventServer struct {
	identityv1.UnsafeEventServiceServer
	events *app.Events
}

// ListEvents is a Bulkhead service's read of the outbox across tenants (Policy: events.read,
// services only, no tenant). The tenant of each event comes from the row, never the request.
func (s *eventServer) ListEvents(ctx context.Context, req *identityv1.ListEventsRequest) (*identityv1.ListEventsResponse, error) {
	page, err := s.events.List(ctx, req.GetAfterCursor(), req.GetPageSize(), req.GetTypes())
	if err != nil {
		return nil, err
	}
	out := &identityv1.ListEventsResponse{NextCursor: page.Next, Events: make([]*identityv1.Event, len(page.Events))}
	for i, e := range page.Events {
		payload, err := structpb.NewStruct(e.Payload)
		if err != nil {
			return nil, apierr.Internal(err)
		}
		out.Events[i] = &identityv1.Event{
			TenantId: e.TenantID, EventId: e.ID, Type: e.Type, Payload: payload,
			CreateTime: timestamppb.New(e.CreatedAt), Cursor: e.Cursor.String(),
		}
	}
	return out, nil
}
