package launch

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc"

	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/services/connection/internal/app"
	"github.com/bulkhead/bulkhead/services/connection/internal/identity"
	"github.com/bulkhead/bulkhead/services/connection/internal/offboarding"
)

// OffboardingPass is what one offboarding pass did (OffboardingOptions.OnPass).
type OffboardingPass = offboarding.Pass

// OffboardingOptions configure the offboarding consumer of identity's member.removed events (a
// deleted tenant is offboarded by identity's saga calling OffboardTenant instead). The zero value is production's: on,
// a pass every 5 seconds. Fields left zero take the environment's values
// (BULKHEAD_CONNECTION_OFFBOARDING_*, through Config).
type OffboardingOptions struct {
	// Disabled turns the consumer off (tests that do not want background revocations).
	Disabled bool
	// Interval between passes (default 5s).
	Interval time.Duration
	// OnPass, if set, is called after every pass: tests wait on it instead of sleeping.
	OnPass func(OffboardingPass)
}

// startOffboarding starts the consumer until ctx ends; r's closers wait for it to stop, before
// the database closes. It uses identity's events with the service's own token (events.read)
// and revokes through the use cases, acting as each tenant's background principal.
func startOffboarding(ctx context.Context, r *Running, o OffboardingOptions, db *pgtenant.DB, idConn grpc.ClientConnInterface, idc *identity.Client, uc *app.App, logger *slog.Logger) error {
	if o.Disabled {
		return nil
	}
	events, err := identity.NewEvents(idConn, idc)
	if err != nil {
		return fmt.Errorf("launch: %w", err)
	}
	w, err := offboarding.New(offboarding.Config{
		DB: db, Source: events, Revoker: uc, Interval: o.Interval, Logger: logger, OnPass: o.OnPass,
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
