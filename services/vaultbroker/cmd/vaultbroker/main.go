// Command vaultbroker runs Bulkhead's vault-broker: the only service that talks to Vault,
// keeping each tenant's credentials and encryption key behind that tenant's own Vault identity.
//
//	vaultbroker            serve (runs migrations first when BULKHEAD_VAULTBROKER_MIGRATE_DATABASE_URL is set)
//	vaultbroker migrate    apply the migrations and exit
//
// Configuration comes from the environment; see services/vaultbroker/README.md. The Vault mode
// is verified at start-up: namespace mode on a server without namespaces exits with status 1
// and says why.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/bulkhead/bulkhead/pkg/logging"
	"github.com/bulkhead/bulkhead/services/vaultbroker/launch"
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
		fmt.Fprintf(stderr, "vaultbroker: configuration: %v\n", err)
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
		fmt.Fprintf(stderr, "usage: vaultbroker [migrate]\n")
		return 2
	}

	r, err := launch.Start(ctx, cfg, launch.Options{Logger: logger})
	if err != nil {
		logger.Error("start failed", "error", err)
		if errors.Is(err, launch.ErrNamespacesUnsupported) {
			// Said plainly as well: this is the misconfiguration an operator must fix.
			fmt.Fprintf(stderr, "vaultbroker: refusing to start: %v\n", err)
		}
		return 1
	}
	// Serve until SIGINT/SIGTERM (then stop gracefully) or until the server fails.
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
