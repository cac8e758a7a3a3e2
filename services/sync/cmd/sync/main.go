// Command sync runs Bulkhead's sync service: incremental, resumable syncs of connections'
// records on River, the change feed (ListRecords, WatchChanges) and signed webhooks.
//
//	sync            serve (runs migrations first when BULKHEAD_SYNC_MIGRATE_DATABASE_URL is set)
//	sync migrate    apply the migrations (River's and the service's) and exit
//
// Configuration comes from the environment (launch.Env*); see services/sync/README.md.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/bulkhead/bulkhead/pkg/logging"
	"github.com/bulkhead/bulkhead/services/sync/launch"
	"github.com/bulkhead/bulkhead/services/sync/migrations"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stderr))
}

// run is main without the process: tests call it with their own environment and output.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) int {
	logger := logging.NewJSON(stderr, slog.LevelInfo)
	cfg, err := launch.ConfigFromEnv(getenv)
	if err != nil {
		fmt.Fprintf(stderr, "sync: configuration: %v\n", err)
		return 2
	}
	switch {
	case len(args) == 1 && args[0] == "migrate":
		if cfg.MigrateDatabaseURL == "" {
			fmt.Fprintf(stderr, "sync: configuration: %s is required to migrate\n", launch.EnvMigrateDatabaseURL)
			return 2
		}
		if err := migrations.Apply(ctx, cfg.MigrateDatabaseURL.Reveal(), cfg.AppRole, logger); err != nil {
			logger.Error("migrate failed", "error", err)
			return 1
		}
		logger.Info("migrations applied")
		return 0
	case len(args) > 0:
		fmt.Fprintf(stderr, "usage: sync [migrate]\n")
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "sync: configuration: %v\n", err)
		return 2
	}
	if cfg.ConnectionAddr == "" {
		fmt.Fprintf(stderr, "sync: configuration: %s is required\n", launch.EnvConnectionAddr)
		return 2
	}
	r, err := launch.Start(ctx, cfg, launch.Options{Logger: logger})
	if err != nil {
		logger.Error("start failed", "error", err)
		return 1
	}
	// Serve until SIGINT/SIGTERM (then stop gracefully: runs get their soft-stop time and stay
	// resumable) or until the server fails.
	select {
	case <-ctx.Done():
		err = r.Close()
	case <-r.Done():
		err = r.Wait()
	}
	if err != nil {
		logger.Error("stopped with error", "error", err)
		return 1
	}
	logger.Info("stopped")
	return 0
}
