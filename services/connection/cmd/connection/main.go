// Command connection runs Bulkhead's connection service: integrations, tenants' connections to
// them (org-level and user-level), OAuth2 authorization with PKCE, and fresh access tokens
// refreshed once however many callers ask. Credentials rest in the vault-broker.
//
//	connection            serve (runs migrations first when BULKHEAD_CONNECTION_MIGRATE_DATABASE_URL is set)
//	connection migrate    apply the migrations and exit
//
// Configuration comes from the environment; see services/connection/README.md.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/bulkhead/bulkhead/pkg/logging"
	"github.com/bulkhead/bulkhead/services/connection/launch"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stderr))
}

// run is main without the process: tests call it with their own environment and output.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) int {
	cfg, err := launch.ConfigFromEnv(getenv)
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		fmt.Fprintf(stderr, "connection: configuration: %v\n", err)
		return 2
	}
	logger := logging.NewJSON(stderr, cfg.LogLevel)

	switch {
	case len(args) == 1 && args[0] == "migrate":
		if err := launch.Migrate(ctx, cfg, logger); err != nil {
			logger.Error("migrate failed", "error", err)
			return 1
		}
		logger.Info("migrations applied")
		return 0
	case len(args) > 0:
		fmt.Fprintf(stderr, "usage: connection [migrate]\n")
		return 2
	}

	r, err := launch.Start(ctx, cfg, launch.Options{Logger: logger})
	if err != nil {
		logger.Error("start failed", "error", err)
		return 1
	}
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
