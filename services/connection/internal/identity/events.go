package identity

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	"github.com/bulkhead/bulkhead/pkg/grpcserver"
)

// Event is one of identity's outbox events, as offboarding needs it.
type Event struct {
	TenantID string
	ID       string
	Type     string
	// UserID is the removed member of a member.removed event.
	UserID string
	// Cursor is the position after this event.
	Cursor string
}

// Events reads identity's outbox (EventService.ListEvents) as the service itself: the call
// needs events.read, a scope of the service's own platform credential. Safe for concurrent use.
type Events struct {
	c       identityv1.EventServiceClient
	token   func(ctx context.Context) (string, error)
	timeout time.Duration
}

// NewEvents returns an Events on conn (identity's gRPC connection), authenticating with the
// service token of ids.
func NewEvents(conn grpc.ClientConnInterface, ids *Client) (*Events, error) {
	if conn == nil || ids == nil {
		return nil, errors.New("identity: NewEvents needs a connection and a client")
	}
	return &Events{c: identityv1.NewEventServiceClient(conn), token: ids.Token, timeout: 10 * time.Second}, nil
}

// ListEvents returns up to pageSize events of types after the cursor after ("" from the
// start) and the cursor to continue from.
func (e *Events) ListEvents(ctx context.Context, after string, pageSize int, types []string) ([]Event, string, error) {
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	tok, err := e.token(ctx)
	if err != nil {
		return nil, "", err
	}
	// Towards identity the service acts as itself: its token is both credentials.
	ctx = metadata.NewOutgoingContext(ctx, metadata.Pairs(grpcserver.MDAuthorization, "Bearer "+tok, grpcserver.MDServiceToken, tok))
	resp, err := e.c.ListEvents(ctx, &identityv1.ListEventsRequest{AfterCursor: after, PageSize: int32(pageSize), Types: types})
	if err != nil {
		return nil, "", fmt.Errorf("identity: list events: %w", err)
	}
	out := make([]Event, len(resp.GetEvents()))
	for i, ev := range resp.GetEvents() {
		out[i] = Event{
			TenantID: ev.GetTenantId(), ID: ev.GetEventId(), Type: ev.GetType(), Cursor: ev.GetCursor(),
			UserID: ev.GetPayload().GetFields()["user_id"].GetStringValue(),
		}
	}
	return out, resp.GetNextCursor(), nil
}
