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
	"google.golang.org/protobuf/types/known/timestamppb"

	syncv1 "github.com/bulkhead/bulkhead/gen/bulkhead/sync/v1"
	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/pkg/authz"
	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/services/sync/internal/engine"
	"github.com/bulkhead/bulkhead/services/sync/internal/webhook"
)

// WebhookPolicy is who may call each WebhookService RPC.
func WebhookPolicy() authz.Policy {
	const svc = "/bulkhead.sync.v1.WebhookService/"
	return authz.Policy{
		svc + "CreateWebhookEndpoint": {Permission: authz.WebhooksManage},
		svc + "ListWebhookEndpoints":  {Permission: authz.WebhooksManage},
		svc + "DeleteWebhookEndpoint": {Permission: authz.WebhooksManage},
		svc + "ListWebhookDeliveries": {Permission: authz.WebhooksManage},
		svc + "ReplayWebhookDelivery": {Permission: authz.WebhooksManage},
	}
}

// Webhooks implements WebhookService.
type Webhooks struct {
	syncv1.UnsafeWebhookServiceServer
	d      *webhook.Dispatcher
	engine *engine.Engine
	db     *pgtenant.DB
}

// NewWebhooks returns the WebhookService handlers.
func NewWebhooks(d *webhook.Dispatcher, e *engine.Engine) *Webhooks {
	return &Webhooks{d: d, engine: e, db: e.DB()}
}

var _ syncv1.WebhookServiceServer = (*Webhooks)(nil)

var eventNames = map[syncv1.WebhookEvent]string{
	syncv1.WebhookEvent_WEBHOOK_EVENT_SYNC_COMPLETED:     webhook.EventSyncCompleted,
	syncv1.WebhookEvent_WEBHOOK_EVENT_SYNC_FAILED:        webhook.EventSyncFailed,
	syncv1.WebhookEvent_WEBHOOK_EVENT_RECORDS_CHANGED:    webhook.EventRecordsChanged,
	syncv1.WebhookEvent_WEBHOOK_EVENT_CONNECTION_CHANGED: webhook.EventConnectionChanged,
}

func eventToProto(name string) syncv1.WebhookEvent {
	for k, v := range eventNames {
		if v == name {
			return k
		}
	}
	return syncv1.WebhookEvent_WEBHOOK_EVENT_UNSPECIFIED
}

func endpointToProto(e *webhook.Endpoint) *syncv1.WebhookEndpoint {
	out := &syncv1.WebhookEndpoint{TenantId: e.TenantID, EndpointId: e.ID, Url: e.URL, Description: e.Description, CreateTime: timestamppb.New(e.CreatedAt)}
	for _, ev := range e.Events {
		out.Events = append(out.Events, eventToProto(ev))
	}
	return out
}

var deliveryStates = map[string]syncv1.DeliveryState{
	webhook.StatePending:    syncv1.DeliveryState_DELIVERY_STATE_PENDING,
	webhook.StateDelivered:  syncv1.DeliveryState_DELIVERY_STATE_DELIVERED,
	webhook.StateDeadLetter: syncv1.DeliveryState_DELIVERY_STATE_DEAD_LETTER,
}

func deliveryToProto(d *webhook.Delivery) *syncv1.WebhookDelivery {
	return &syncv1.WebhookDelivery{
		DeliveryId: d.ID, EndpointId: d.EndpointID, EventId: d.EventID, Event: eventToProto(d.Event),
		State: deliveryStates[d.State], Attempts: int32(d.Attempts), LastStatusCode: int32(d.LastStatus),
		LastError: d.LastError, CreateTime: timestamppb.New(d.CreatedAt),
		NextAttemptTime: timestamppb.New(d.NextAttemptAt), LastAttemptTime: ts(d.LastAttemptAt),
	}
}

func (w *Webhooks) CreateWebhookEndpoint(ctx context.Context, req *syncv1.CreateWebhookEndpointRequest) (*syncv1.CreateWebhookEndpointResponse, error) {
	sc, err := scope(ctx, req.GetTenantId(), "webhook endpoint")
	if err != nil {
		return nil, err
	}
	if err := w.d.CheckURL(ctx, req.GetUrl()); err != nil {
		return nil, apierr.InvalidArgument("url", "%s", strings.TrimPrefix(err.Error(), "webhook: "))
	}
	events := make([]string, 0, len(req.GetEvents()))
	for _, ev := range req.GetEvents() {
		events = append(events, eventNames[ev])
	}
	secret, err := webhook.NewSecret()
	if err != nil {
		return nil, apierr.Internal(err)
	}
	var ep *webhook.Endpoint
	err = w.db.InTx(ctx, sc, func(tx pgx.Tx) error {
		var err error
		ep, err = webhook.CreateEndpoint(ctx, tx, sc.TenantID, req.GetUrl(), events, req.GetDescription(), []byte(secret))
		return err
	})
	if err != nil {
		return nil, err
	}
	return &syncv1.CreateWebhookEndpointResponse{Endpoint: endpointToProto(ep), SigningSecret: secret}, nil
}

func (w *Webhooks) ListWebhookEndpoints(ctx context.Context, req *syncv1.ListWebhookEndpointsRequest) (*syncv1.ListWebhookEndpointsResponse, error) {
	sc, err := scope(ctx, req.GetTenantId(), "webhook endpoint")
	if err != nil {
		return nil, err
	}
	size := int(req.GetPageSize())
	if size == 0 {
		size = 100
	}
	after, afterID, err := decodePageToken(req.GetPageToken())
	if err != nil {
		return nil, err
	}
	var list []*webhook.Endpoint
	err = w.db.InTx(ctx, sc, func(tx pgx.Tx) error {
		var err error
		list, err = webhook.ListEndpoints(ctx, tx, sc.TenantID, after, afterID, size+1)
		return err
	})
	if err != nil {
		return nil, err
	}
	resp := &syncv1.ListWebhookEndpointsResponse{}
	if len(list) > size {
		list = list[:size]
		resp.NextPageToken = encodePageToken(list[size-1].CreatedAt, list[size-1].ID)
	}
	for _, e := range list {
		resp.Endpoints = append(resp.Endpoints, endpointToProto(e))
	}
	return resp, nil
}

func (w *Webhooks) DeleteWebhookEndpoint(ctx context.Context, req *syncv1.DeleteWebhookEndpointRequest) (*syncv1.DeleteWebhookEndpointResponse, error) {
	sc, err := scope(ctx, req.GetTenantId(), "webhook endpoint")
	if err != nil {
		return nil, err
	}
	err = w.db.InTx(ctx, sc, func(tx pgx.Tx) error {
		return webhook.DeleteEndpoint(ctx, tx, sc.TenantID, req.GetEndpointId())
	})
	if errors.Is(err, webhook.ErrNotFound) {
		return nil, apierr.NotFound("webhook endpoint")
	}
	if err != nil {
		return nil, err
	}
	return &syncv1.DeleteWebhookEndpointResponse{}, nil
}

var stateNames = map[syncv1.DeliveryState]string{
	syncv1.DeliveryState_DELIVERY_STATE_PENDING:     webhook.StatePending,
	syncv1.DeliveryState_DELIVERY_STATE_DELIVERED:   webhook.StateDelivered,
	syncv1.DeliveryState_DELIVERY_STATE_DEAD_LETTER: webhook.StateDeadLetter,
}

func (w *Webhooks) ListWebhookDeliveries(ctx context.Context, req *syncv1.ListWebhookDeliveriesRequest) (*syncv1.ListWebhookDeliveriesResponse, error) {
	sc, err := scope(ctx, req.GetTenantId(), "webhook delivery")
	if err != nil {
		return nil, err
	}
	size := int(req.GetPageSize())
	if size == 0 {
		size = 100
	}
	before, beforeID, err := decodeDeliveryToken(req.GetPageToken())
	if err != nil {
		return nil, err
	}
	var list []*webhook.Delivery
	err = w.db.InTx(ctx, sc, func(tx pgx.Tx) error {
		var err error
		list, err = webhook.ListDeliveries(ctx, tx, sc.TenantID, req.GetEndpointId(), stateNames[req.GetState()], before, beforeID, size+1)
		return err
	})
	if err != nil {
		return nil, err
	}
	resp := &syncv1.ListWebhookDeliveriesResponse{}
	if len(list) > size {
		list = list[:size]
		resp.NextPageToken = encodeDeliveryToken(list[size-1].CreatedAt, list[size-1].ID)
	}
	for _, d := range list {
		resp.Deliveries = append(resp.Deliveries, deliveryToProto(d))
	}
	return resp, nil
}

func (w *Webhooks) ReplayWebhookDelivery(ctx context.Context, req *syncv1.ReplayWebhookDeliveryRequest) (*syncv1.ReplayWebhookDeliveryResponse, error) {
	sc, err := scope(ctx, req.GetTenantId(), "webhook delivery")
	if err != nil {
		return nil, err
	}
	var d *webhook.Delivery
	err = w.db.InTx(ctx, sc, func(tx pgx.Tx) error {
		var err error
		d, err = w.d.Replay(ctx, tx, w.engine.River(), sc.TenantID, req.GetDeliveryId())
		return err
	})
	switch {
	case errors.Is(err, webhook.ErrNotFound):
		return nil, apierr.NotFound("webhook delivery")
	case errors.Is(err, webhook.ErrPending):
		return nil, apierr.FailedPrecondition("", "the delivery is still pending")
	case err != nil:
		return nil, err
	}
	return &syncv1.ReplayWebhookDeliveryResponse{Delivery: deliveryToProto(d)}, nil
}

// Delivery page tokens page backwards in time (newest first).
const deliveryTokenPrefix = "d1|"

func encodeDeliveryToken(created time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, "%s%d|%s", deliveryTokenPrefix, created.UnixMicro(), id))
}

func decodeDeliveryToken(tok string) (time.Time, string, error) {
	if tok == "" {
		return time.Time{}, "", nil
	}
	bad := apierr.InvalidArgument("page_token", "page_token is not one this service returned")
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || !strings.HasPrefix(string(raw), deliveryTokenPrefix) {
		return time.Time{}, "", bad
	}
	parts := strings.SplitN(strings.TrimPrefix(string(raw), deliveryTokenPrefix), "|", 2)
	var micros int64
	if len(parts) != 2 {
		return time.Time{}, "", bad
	}
	if _, err := fmt.Sscan(parts[0], &micros); err != nil {
		return time.Time{}, "", bad
	}
	if _, err := uuid.Parse(parts[1]); err != nil {
		return time.Time{}, "", bad
	}
	return time.UnixMicro(micros), parts[1], nil
}
