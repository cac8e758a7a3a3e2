package webhook

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNotFound: no such endpoint or delivery in this tenant.
var ErrNotFound = errors.New("webhook: not found")

// ErrPending: a replay of a delivery that is still being attempted.
var ErrPending = errors.New("webhook: delivery still pending")

// Endpoint is a registered receiver.
type Endpoint struct {
	TenantID    string
	ID          string
	URL         string
	Events      []string
	Description string
	CreatedAt   time.Time
}

// Delivery states.
const (
	StatePending    = "pending"
	StateDelivered  = "delivered"
	StateDeadLetter = "dead_letter"
)

// Delivery is one event's delivery to one endpoint.
type Delivery struct {
	ID            string
	EndpointID    string
	EventID       string
	Event         string
	State         string
	Attempts      int
	LastStatus    int
	LastError     string
	CreatedAt     time.Time
	NextAttemptAt time.Time
	LastAttemptAt *time.Time
}

// CreateEndpoint stores an endpoint with its signing secret.
func CreateEndpoint(ctx context.Context, tx pgx.Tx, tenantID, url string, events []string, description string, secret []byte) (*Endpoint, error) {
	e := &Endpoint{TenantID: tenantID, URL: url, Events: events, Description: description}
	err := tx.QueryRow(ctx, `INSERT INTO webhook_endpoints (tenant_id, url, events, description, secret)
		VALUES ($1, $2, $3, $4, $5) RETURNING id::text, created_at`, tenantID, url, events, description, secret).
		Scan(&e.ID, &e.CreatedAt)
	if err != nil {
		return nil, fmt.Errorf("webhook: create endpoint: %w", err)
	}
	return e, nil
}

// ListEndpoints returns up to limit endpoints after (afterCreated, afterID), oldest first.
func ListEndpoints(ctx context.Context, tx pgx.Tx, tenantID string, afterCreated time.Time, afterID string, limit int) ([]*Endpoint, error) {
	if afterID == "" {
		afterID = "00000000-0000-0000-0000-000000000000"
	}
	rows, err := tx.Query(ctx, `SELECT tenant_id::text, id::text, url, events, description, created_at
		FROM webhook_endpoints WHERE tenant_id = $1 AND (created_at, id) > ($2, $3::uuid)
		ORDER BY created_at, id LIMIT $4`, tenantID, afterCreated, afterID, limit)
	if err != nil {
		return nil, fmt.Errorf("webhook: list endpoints: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*Endpoint, error) {
		var e Endpoint
		err := r.Scan(&e.TenantID, &e.ID, &e.URL, &e.Events, &e.Description, &e.CreatedAt)
		return &e, err
	})
	if err != nil {
		return nil, fmt.Errorf("webhook: list endpoints: %w", err)
	}
	return out, nil
}

// DeleteEndpoint deletes an endpoint and, by cascade, its deliveries.
func DeleteEndpoint(ctx context.Context, tx pgx.Tx, tenantID, id string) error {
	tag, err := tx.Exec(ctx, `DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2`, tenantID, id)
	if err != nil {
		return fmt.Errorf("webhook: delete endpoint: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

const deliveryColumns = `id::text, endpoint_id::text, event_id::text, event, state, attempts, last_status,
	last_error, created_at, next_attempt_at, last_attempt_at`

func scanDelivery(r pgx.Row) (*Delivery, error) {
	var d Delivery
	err := r.Scan(&d.ID, &d.EndpointID, &d.EventID, &d.Event, &d.State, &d.Attempts, &d.LastStatus,
		&d.LastError, &d.CreatedAt, &d.NextAttemptAt, &d.LastAttemptAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	return &d, err
}

// ListDeliveries returns up to limit deliveries, newest first, after the given position,
// optionally of one endpoint and in one state.
func ListDeliveries(ctx context.Context, tx pgx.Tx, tenantID, endpointID, state string, beforeCreated time.Time, beforeID string, limit int) ([]*Delivery, error) {
	args := []any{tenantID, limit}
	sql := `SELECT ` + deliveryColumns + ` FROM webhook_deliveries WHERE tenant_id = $1`
	if beforeID != "" {
		args = append(args, beforeCreated, beforeID)
		sql += ` AND (created_at, id) < ($3, $4::uuid)`
	}
	if endpointID != "" {
		args = append(args, endpointID)
		sql += fmt.Sprintf(` AND endpoint_id = $%d`, len(args))
	}
	if state != "" {
		args = append(args, state)
		sql += fmt.Sprintf(` AND state = $%d`, len(args))
	}
	sql += ` ORDER BY created_at DESC, id DESC LIMIT $2`
	rows, err := tx.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("webhook: list deliveries: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*Delivery, error) { return scanDelivery(r) })
	if err != nil {
		return nil, fmt.Errorf("webhook: list deliveries: %w", err)
	}
	return out, nil
}

// GetDelivery returns one delivery.
func GetDelivery(ctx context.Context, tx pgx.Tx, tenantID, id string) (*Delivery, error) {
	return scanDelivery(tx.QueryRow(ctx, `SELECT `+deliveryColumns+` FROM webhook_deliveries
		WHERE tenant_id = $1 AND id = $2`, tenantID, id))
}

// attemptTarget is what an attempt needs, read under the delivery's row lock.
type attemptTarget struct {
	delivery *Delivery
	url      string
	secret   []byte
	body     []byte
}

func lockForAttempt(ctx context.Context, tx pgx.Tx, tenantID, id string) (*attemptTarget, error) {
	var t attemptTarget
	var body string
	d := &Delivery{}
	err := tx.QueryRow(ctx, `SELECT d.id::text, d.endpoint_id::text, d.event_id::text, d.event, d.state, d.attempts,
		    d.created_at, d.body::text, e.url, e.secret
		FROM webhook_deliveries d JOIN webhook_endpoints e ON e.tenant_id = d.tenant_id AND e.id = d.endpoint_id
		WHERE d.tenant_id = $1 AND d.id = $2 FOR UPDATE OF d`, tenantID, id).
		Scan(&d.ID, &d.EndpointID, &d.EventID, &d.Event, &d.State, &d.Attempts, &d.CreatedAt, &body, &t.url, &t.secret)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("webhook: load delivery: %w", err)
	}
	t.delivery, t.body = d, []byte(body)
	return &t, nil
}

func recordAttempt(ctx context.Context, tx pgx.Tx, tenantID, id, state string, status int, msg string, next time.Time) error {
	if len(msg) > 1000 {
		msg = msg[:1000]
	}
	_, err := tx.Exec(ctx, `UPDATE webhook_deliveries SET state = $3, attempts = attempts + 1, last_status = $4,
		    last_error = $5, last_attempt_at = now(), next_attempt_at = $6
		WHERE tenant_id = $1 AND id = $2`, tenantID, id, state, status, msg, next)
	if err != nil {
		return fmt.Errorf("webhook: record attempt: %w", err)
	}
	return nil
}
