package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/sony/gobreaker/v2"

	"github.com/bulkhead/bulkhead/pkg/pgtenant"
)

// DeliverArgs are a delivery job's arguments: ids only.
type DeliverArgs struct {
	TenantID   string `json:"tenant_id"`
	DeliveryID string `json:"delivery_id"`
}

// Kind implements river.JobArgs.
func (DeliverArgs) Kind() string { return "bulkhead_webhook_deliver" }

// InsertOpts puts deliveries on their own queue. Retries are the worker's (snoozes with its own
// schedule); River's attempts only cover a worker that crashed mid-attempt.
func (DeliverArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: Queue, MaxAttempts: 5}
}

// Event is one event to emit.
type Event struct {
	Kind string
	// Data is the event's payload, marshalled to JSON under "data".
	Data any
}

// body is the JSON sent to receivers.
type body struct {
	ID        string    `json:"id"`
	Type      string    `json:"type"`
	CreatedAt time.Time `json:"created_at"`
	TenantID  string    `json:"tenant_id"`
	Data      any       `json:"data"`
}

// Inserter inserts River jobs in a transaction (the River client's InsertManyTx).
type Inserter interface {
	InsertManyTx(ctx context.Context, tx pgx.Tx, params []river.InsertManyParams) ([]*rivertype.JobInsertResult, error)
}

// Emit writes ev to the outbox of every endpoint of tenantID subscribed to it, with one delivery
// job each, in tx: the event exists exactly when tx commits. It returns the event id ("" when
// no endpoint is subscribed).
func (d *Dispatcher) Emit(ctx context.Context, tx pgx.Tx, jobs Inserter, tenantID string, ev Event) (string, error) {
	id := uuid.NewString()
	b, err := json.Marshal(body{ID: id, Type: ev.Kind, CreatedAt: time.Now().UTC(), TenantID: tenantID, Data: ev.Data})
	if err != nil {
		return "", fmt.Errorf("webhook: event body: %w", err)
	}
	rows, err := tx.Query(ctx, `INSERT INTO webhook_deliveries (tenant_id, endpoint_id, event_id, event, body)
		SELECT tenant_id, id, $2, $3, $4 FROM webhook_endpoints WHERE tenant_id = $1 AND $3 = ANY (events)
		RETURNING id::text`, tenantID, id, ev.Kind, string(b))
	if err != nil {
		return "", fmt.Errorf("webhook: outbox: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", fmt.Errorf("webhook: outbox: %w", err)
	}
	if len(ids) == 0 {
		return "", nil
	}
	params := make([]river.InsertManyParams, len(ids))
	for i, did := range ids {
		params[i] = river.InsertManyParams{Args: DeliverArgs{TenantID: tenantID, DeliveryID: did}}
	}
	if _, err := jobs.InsertManyTx(ctx, tx, params); err != nil {
		return "", fmt.Errorf("webhook: enqueue deliveries: %w", err)
	}
	return id, nil
}

// Replay queues a delivered or dead-lettered delivery again with a fresh retry budget (same
// event id and body). Errors: ErrNotFound, ErrPending.
func (d *Dispatcher) Replay(ctx context.Context, tx pgx.Tx, jobs Inserter, tenantID, deliveryID string) (*Delivery, error) {
	cur, err := GetDelivery(ctx, tx, tenantID, deliveryID)
	if err != nil {
		return nil, err
	}
	if cur.State == StatePending {
		return nil, ErrPending
	}
	// created_at restarts too: MaxAge counts from the replay.
	out, err := scanDelivery(tx.QueryRow(ctx, `UPDATE webhook_deliveries SET state = 'pending', attempts = 0,
		    next_attempt_at = now(), created_at = now(), last_error = ''
		WHERE tenant_id = $1 AND id = $2 RETURNING `+deliveryColumns, tenantID, deliveryID))
	if err != nil {
		return nil, fmt.Errorf("webhook: replay: %w", err)
	}
	if _, err := jobs.InsertManyTx(ctx, tx, []river.InsertManyParams{{Args: DeliverArgs{TenantID: tenantID, DeliveryID: deliveryID}}}); err != nil {
		return nil, fmt.Errorf("webhook: replay: %w", err)
	}
	return out, nil
}

// Worker is the River worker of deliveries.
type Worker struct {
	river.WorkerDefaults[DeliverArgs]
	d *Dispatcher
}

// Worker returns the River worker to register.
func (d *Dispatcher) Worker() *Worker { return &Worker{d: d} }

// outcome is an attempt's result; as an error it is a failed attempt.
type outcome struct {
	status     int
	err        error
	retryAfter time.Duration
}

// Work makes one attempt and schedules the next one by snoozing.
func (w *Worker) Work(ctx context.Context, job *river.Job[DeliverArgs]) error {
	d, a := w.d, job.Args
	scope := pgtenant.Scope{TenantID: a.TenantID}
	var t *attemptTarget
	err := d.cfg.DB.InTx(ctx, scope, func(tx pgx.Tx) error {
		var err error
		t, err = lockForAttempt(ctx, tx, a.TenantID, a.DeliveryID)
		return err
	})
	if errors.Is(err, ErrNotFound) {
		return nil // the endpoint was deleted, and its deliveries with it
	}
	if err != nil {
		return err
	}
	if t.delivery.State != StatePending {
		return nil
	}
	br := d.breaker(t.delivery.EndpointID)
	res, err := br.Execute(func() (int, error) {
		o := d.attempt(ctx, t)
		if o.err != nil {
			return o.status, &o
		}
		return o.status, nil
	})
	var o outcome
	switch {
	case errors.Is(err, gobreaker.ErrOpenState), errors.Is(err, gobreaker.ErrTooManyRequests):
		// Not an attempt: the endpoint failed repeatedly; try again when the breaker half-opens.
		return river.JobSnooze(d.cfg.BreakerOpen)
	case err == nil:
		o = outcome{status: res}
	default:
		oo := asOutcome(err)
		if oo == nil {
			return err
		}
		o = *oo
	}
	if ctx.Err() != nil {
		return river.JobSnooze(0) // shutting down: the attempt did not count, retry at once
	}

	attempts := t.delivery.Attempts + 1
	state, next := StateDelivered, time.Now()
	var snooze time.Duration
	if o.err != nil {
		switch {
		case !retryable(o.status),
			attempts >= d.cfg.MaxAttempts,
			time.Since(t.delivery.CreatedAt) > d.cfg.MaxAge:
			state = StateDeadLetter
		default:
			state = StatePending
			snooze = d.backoff(attempts)
			if o.retryAfter > snooze {
				snooze = min(o.retryAfter, d.cfg.MaxRetry)
			}
			next = next.Add(snooze)
		}
	}
	msg := ""
	if o.err != nil {
		msg = o.err.Error()
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := d.cfg.DB.InTx(wctx, scope, func(tx pgx.Tx) error {
		return recordAttempt(wctx, tx, a.TenantID, a.DeliveryID, state, o.status, msg, next)
	}); err != nil {
		return err
	}
	if state == StatePending {
		return river.JobSnooze(snooze)
	}
	if state == StateDeadLetter {
		d.cfg.Logger.WarnContext(ctx, "webhook delivery dead-lettered", "tenant_id", a.TenantID,
			"delivery_id", a.DeliveryID, "attempts", attempts, "status", o.status, "error", msg)
	}
	return nil
}

func asOutcome(err error) *outcome {
	var o *outcome
	errors.As(err, &o)
	return o
}

func (o *outcome) Error() string { return o.err.Error() }

// retryable: network errors (status 0), 408, 429 and 5xx are worth another attempt; any other
// answer is the receiver refusing this delivery for good.
func retryable(status int) bool {
	return status == 0 || status == http.StatusRequestTimeout || status == http.StatusTooManyRequests || status >= 500
}

func (d *Dispatcher) backoff(attempts int) time.Duration {
	delay := d.cfg.FirstRetry
	for i := 1; i < attempts && delay < d.cfg.MaxRetry; i++ {
		delay *= 2
	}
	delay = min(delay, d.cfg.MaxRetry)
	// ±20% jitter, so receivers recovering from an outage are not hit in lockstep.
	return delay*4/5 + rand.N(delay*2/5+1)
}

// attempt POSTs the delivery once.
func (d *Dispatcher) attempt(ctx context.Context, t *attemptTarget) outcome {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(t.body))
	if err != nil {
		return outcome{err: fmt.Errorf("request: %w", err)}
	}
	ts := time.Now().Unix()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Bulkhead-Webhooks/1")
	req.Header.Set(HeaderID, t.delivery.EventID)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(HeaderSignature, Sign(t.secret, ts, t.body))
	resp, err := d.client.Do(req)
	if err != nil {
		// The URL is the tenant's own; the error names the refusal (e.g. internal address).
		return outcome{err: errors.New(strings.ReplaceAll(err.Error(), t.url, "endpoint"))}
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return outcome{status: resp.StatusCode}
	}
	o := outcome{status: resp.StatusCode, err: fmt.Errorf("endpoint answered %d", resp.StatusCode)}
	if v := resp.Header.Get("Retry-After"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n >= 0 {
			o.retryAfter = time.Duration(n) * time.Second
		} else if at, err := http.ParseTime(v); err == nil {
			o.retryAfter = time.Until(at)
		}
	}
	return o
}
