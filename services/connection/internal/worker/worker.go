// Package worker is the connection service's background maintenance: it retries pending
// provider revocations (with backoff, until confirmed — or given up as failed when the provider
// refuses for good or the give-up period passes; the broker credential is deleted either way)
// and refreshes OAuth2 credentials before callers need them — tokens expiring within the
// refresh margin, credentials due for their periodic test, and refresh tokens that have not
// been used for the check interval (providers revoke idle refresh tokens).
//
// Each pass finds due connections across tenants with one read-only platform query (ids
// only), then works tenant by tenant through the use cases (app.Maintain), acting as each
// tenant's background principal. Every replica may run it: the work on a connection happens
// under its row lock and re-checks what is due there, so two replicas never refresh or revoke
// the same connection twice.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/bulkhead/bulkhead/services/connection/internal/app"
	"github.com/bulkhead/bulkhead/services/connection/internal/store"
)

// Maintainer does one tenant's due work (*app.App).
type Maintainer interface {
	Maintain(ctx context.Context, tenantID string, due []store.Due) (app.MaintainResult, error)
}

// Pass is what one pass did, for logs and test signals.
type Pass struct {
	// Due connections were found; Tenants is how many tenants they belong to.
	Due, Tenants int
	// Totals of the tenants' app.MaintainResult.
	app.MaintainResult
	// Err joins the pass's failures (each tenant's, and the query's); the pass goes on past
	// a failing tenant.
	Err error
}

// Config configures a Worker.
type Config struct {
	Store      store.Maintenance
	Maintainer Maintainer
	// Now is the clock deciding what is due (default time.Now); the use cases have their own.
	Now func() time.Time
	// Interval between passes (default 30s).
	Interval time.Duration
	// Margin: tokens expiring within it are refreshed (the service's refresh margin).
	Margin time.Duration
	// Idle: OAuth2 connections not refreshed for this long are refreshed (the check interval).
	Idle time.Duration
	// Batch bounds the connections one pass looks at (default 500).
	Batch int
	// PassTimeout bounds one pass (default 5m).
	PassTimeout time.Duration
	Logger      *slog.Logger
	// OnPass, if set, is called after every pass (tests wait on it instead of sleeping).
	OnPass func(Pass)
}

// Worker runs maintenance passes.
type Worker struct {
	cfg Config
	log *slog.Logger
}

// New checks cfg and returns a Worker.
func New(cfg Config) (*Worker, error) {
	switch {
	case cfg.Store == nil || cfg.Maintainer == nil:
		return nil, errors.New("worker: Store and Maintainer are required")
	case cfg.Margin < 0 || cfg.Idle <= 0:
		return nil, errors.New("worker: Margin must not be negative and Idle must be positive")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 30 * time.Second
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 500
	}
	if cfg.PassTimeout <= 0 {
		cfg.PassTimeout = 5 * time.Minute
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Worker{cfg: cfg, log: log.With("component", "worker")}, nil
}

// Run passes every Interval until ctx ends, starting at once.
func (w *Worker) Run(ctx context.Context) {
	t := time.NewTicker(w.cfg.Interval)
	defer t.Stop()
	for {
		p := w.RunOnce(ctx)
		if p.Err != nil && ctx.Err() == nil {
			w.log.WarnContext(ctx, "maintenance pass had failures", "error", p.Err.Error(), "due", p.Due, "failed", p.Failed)
		}
		if w.cfg.OnPass != nil {
			w.cfg.OnPass(p)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// RunOnce runs one pass: the due connections, then each tenant's work.
func (w *Worker) RunOnce(ctx context.Context) Pass {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.PassTimeout)
	defer cancel()
	var p Pass
	due, err := w.cfg.Store.DueConnections(ctx, store.DueQuery{
		Now: w.cfg.Now(), Margin: w.cfg.Margin, Idle: w.cfg.Idle, Limit: w.cfg.Batch,
	})
	if err != nil {
		p.Err = fmt.Errorf("worker: due connections: %w", err)
		return p
	}
	p.Due = len(due)
	var errs []error
	// DueConnections orders by tenant: each run of one tenant's items is one Maintain call.
	for start := 0; start < len(due); {
		end := start + 1
		for end < len(due) && due[end].TenantID == due[start].TenantID {
			end++
		}
		tenant := due[start].TenantID
		res, err := w.cfg.Maintainer.Maintain(ctx, tenant, due[start:end])
		p.Tenants++
		p.Refreshed += res.Refreshed
		p.Revoked += res.Revoked
		p.Pending += res.Pending
		p.GivenUp += res.GivenUp
		p.Failed += res.Failed
		if err != nil {
			errs = append(errs, fmt.Errorf("tenant %s: %w", tenant, err))
		}
		if res.Refreshed+res.Revoked+res.Pending+res.GivenUp+res.Failed > 0 {
			w.log.InfoContext(ctx, "maintained", "tenant_id", tenant, "refreshed", res.Refreshed,
				"revoked", res.Revoked, "revocation_pending", res.Pending, "revocation_given_up", res.GivenUp, "failed", res.Failed)
		}
		start = end
		if ctx.Err() != nil {
			break
		}
	}
	p.Err = errors.Join(errs...)
	return p
}
