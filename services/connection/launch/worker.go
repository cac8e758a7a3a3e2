package launch

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/bulkhead/bulkhead/services/connection/internal/app"
	"github.com/bulkhead/bulkhead/services/connection/internal/store/postgres"
	"github.com/bulkhead/bulkhead/services/connection/internal/worker"
)

// WorkerPass is what one maintenance pass did (WorkerOptions.OnPass).
type WorkerPass = worker.Pass

// WorkerOptions configure the background worker (internal/worker): retries of pending provider
// revocations and proactive refreshes. The zero value is production's: on, a pass every 30
// seconds, at most 500 connections a pass. Its margin and idle interval are the service's
// REFRESH_MARGIN and CHECK_INTERVAL. Fields left zero take the environment's values
// (BULKHEAD_CONNECTION_WORKER_*, through Config).
type WorkerOptions struct {
	// Disabled turns the worker off (tests that do not want background refreshes).
	Disabled bool
	// Interval between passes (default 30s).
	Interval time.Duration
	// Batch bounds the connections one pass looks at (default 500).
	Batch int
	// OnPass, if set, is called after every pass: tests wait on it instead of sleeping.
	OnPass func(WorkerPass)
}

// startWorker starts the worker until ctx ends; r's closers wait for it to stop, before the
// database closes.
func startWorker(ctx context.Context, r *Running, o WorkerOptions, cfg Config, st *postgres.Postgres, uc *app.App, now func() time.Time, logger *slog.Logger) error {
	if o.Disabled {
		return nil
	}
	w, err := worker.New(worker.Config{
		Store: st, Maintainer: uc, Now: now, Interval: o.Interval, Batch: o.Batch,
		Margin: cfg.RefreshMargin, Idle: cfg.CheckInterval, Logger: logger, OnPass: o.OnPass,
	})
	if err != nil {
		return fmt.Errorf("launch: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx)
	}()
	r.closers = append(r.closers, func() { cancel(); <-done })
	return nil
}
