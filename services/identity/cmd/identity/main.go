// Command identity runs Bulkhead's identity service: tenants, members, service accounts, API
// keys and the tokens every Bulkhead call carries.
//
//	identity            serve (runs migrations first when BULKHEAD_IDENTITY_MIGRATE_DATABASE_URL is set)
//	identity migrate    apply the migrations and exit
//
// Configuration comes from the environment; see services/identity/README.md.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/bulkhead/bulkhead/pkg/logging"
	"github.com/bulkhead/bulkhead/services/identity/launch"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	cfg, err := launch.ConfigFromEnv(os.Getenv)
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "identity: configuration: %v\n", err)
		return 2
	}
	logger := logging.NewJSON(os.Stderr, cfg.LogLevel)

	switch {
	case len(args) == 1 && args[0] == "migrate":
		if err := launch.Migrate(ctx, cfg, logger); err != nil {
			logger.Error("migrate failed", "error", err)
			return 1
		}
		logger.Info("migrations applied")
		return 0
	case len(args) > 0:
		fmt.Fprintf(os.Stderr, "usage: identity [migrate]\n")
		return 2
	}

	r, err := launch.Start(ctx, cfg, launch.Options{Logger: logger})
	if err != nil {
		logger.Error("start failed", "error", err)
		return 1
	}
	// Serve until SIGINT/SIGTERM (then stop gracefully) or until a server fails.
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
