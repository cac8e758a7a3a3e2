package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bulkhead/bulkhead/pkg/grpcclient"
	"github.com/bulkhead/bulkhead/services/connection/internal/store"
)

// maxRevocationBackoff caps the wait between provider revocation attempts.
const maxRevocationBackoff = time.Hour

// revocationBackoff is the wait before the next revocation attempt after attempts unconfirmed
// ones: 1, 2, 4, … minutes, at most an hour.
func revocationBackoff(attempts int) time.Duration {
	if attempts >= 6 {
		return maxRevocationBackoff
	}
	return min(time.Minute<<max(attempts, 0), maxRevocationBackoff)
}

// MaintainResult says what Maintain did for one tenant.
type MaintainResult struct {
	// Refreshed connections got a new credential (or were found refreshed by someone else).
	Refreshed int
	// Revoked connections ended their revocation confirmed (or not supported) with the
	// credential deleted; Pending ones are still pending, retried later; GivenUp ones ended
	// failed (the provider refused for good, or the give-up period passed), credential deleted.
	Revoked, Pending, GivenUp int
	// Failed counts connections whose work failed (logged; retried on a later pass).
	Failed int
}

// Maintain does the background work due for tenantID's connections (every item of due must
// be of that tenant): it retries pending provider revocations and refreshes credentials before
// they expire or before an idle refresh token is dropped by the provider. It runs without a
// caller, so it acts as the tenant's background principal (identity ExchangeToken, as
// offboarding does). Each connection goes through the same locked paths as RevokeConnection
// and GetAccessToken: one refresh per connection however many replicas run the worker.
//
// When identity refuses the tenant (suspended or deleted), nothing is refreshed and pending
// revocations are pushed to their next attempt without touching the broker or the provider.
func (a *App) Maintain(ctx context.Context, tenantID string, due []store.Due) (MaintainResult, error) {
	var res MaintainResult
	tok, err := a.userTokens.UserToken(ctx, tenantID, "")
	switch {
	case err == nil:
		ctx = grpcclient.ActAs(ctx, tenantID, tok)
	case refused(err):
		for _, d := range due {
			if d.TenantID == tenantID && d.Work == store.DueRevocation {
				if err := a.deferRevocation(ctx, d); err != nil {
					return res, err
				}
				res.Pending++
			}
		}
		return res, nil
	default:
		return res, fmt.Errorf("app: background token: %w", err)
	}
	var errs []error
	for _, d := range due {
		if d.TenantID != tenantID {
			continue
		}
		switch d.Work {
		case store.DueRevocation:
			state, err := a.retryRevocation(ctx, d)
			switch {
			case err != nil:
				res.Failed++
				errs = append(errs, fmt.Errorf("revocation of %s: %w", d.ID, err))
			case state == store.RevocationPending:
				res.Pending++
			case state == store.RevocationFailed:
				res.GivenUp++
			case state != "":
				res.Revoked++
			}
		case store.DueRefresh:
			done, err := a.backgroundRefresh(ctx, d)
			switch {
			case err != nil:
				res.Failed++
				errs = append(errs, fmt.Errorf("refresh of %s: %w", d.ID, err))
			case done:
				res.Refreshed++
			}
		}
	}
	return res, errors.Join(errs...)
}

// retryRevocation retries a pending revocation whose attempt is due, under the row lock (so a
// replica that got there first leaves nothing to do). It returns the state reached, or "" when
// there was nothing to do. Admin visibility: a revoke-only path that hands out no credential.
func (a *App) retryRevocation(ctx context.Context, d store.Due) (store.RevocationState, error) {
	var state store.RevocationState
	err := a.store.WithLockedConnection(ctx, store.Actor{TenantID: d.TenantID, Admin: true}, d.ID, func(ctx context.Context, l store.Locked) error {
		conn := l.Connection()
		if conn.RevocationState != store.RevocationPending || a.now().Before(conn.RevocationNextAt) {
			return nil
		}
		out, err := a.revokeLocked(ctx, l)
		state = out.RevocationState
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return "", nil
	}
	return state, err
}

// deferRevocation pushes a pending revocation of a tenant identity refuses to its next attempt.
func (a *App) deferRevocation(ctx context.Context, d store.Due) error {
	err := a.store.WithLockedConnection(ctx, store.Actor{TenantID: d.TenantID, Admin: true}, d.ID, func(ctx context.Context, l store.Locked) error {
		conn := l.Connection()
		if conn.RevocationState != store.RevocationPending || a.now().Before(conn.RevocationNextAt) {
			return nil
		}
		_, err := l.Revoke(ctx, store.RevocationPending, a.now().Add(revocationBackoff(conn.RevocationAttempts)), a.now())
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}

// backgroundRefresh refreshes d through GetAccessToken's path (sharedRefresh: singleflight in
// the process, the row lock across replicas, check-and-set at the broker) when it is still due:
// within the margin of expiry, due for its check, or — OAuth2 with an idle refresh token —
// not refreshed for the check interval, in which case the refresh is forced with the current
// version as the "rejected" one, so a replica that refreshed meanwhile wins and the provider
// is asked once. It reads the row with the use view of the owner (a user-level connection is
// its owner's), and reports whether it refreshed.
func (a *App) backgroundRefresh(ctx context.Context, d store.Due) (bool, error) {
	actor := store.Actor{TenantID: d.TenantID, UserID: d.OwnerUserID}
	conn, err := a.store.GetConnection(ctx, actor, d.ID)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if usable(conn) != nil {
		return false, nil // needs_reauth, disabled, revoked, integration off: nothing to refresh
	}
	now := a.now()
	req := TokenRequest{ConnectionID: conn.ID}
	if !a.needsWork(conn, now, req) {
		last := conn.LastRefreshAt
		if last.IsZero() {
			last = conn.CreatedAt
		}
		if conn.AuthType != store.AuthOAuth2 || now.Sub(last) < a.checkEvery {
			return false, nil // refreshed meanwhile
		}
		req.ForceRefresh, req.RejectedVersion = true, conn.CredentialVersion
	}
	if _, err := a.sharedRefresh(ctx, actor, conn, req); err != nil {
		return false, err
	}
	return true, nil
}
