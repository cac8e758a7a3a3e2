package app

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/pkg/authn"
	"github.com/bulkhead/bulkhead/pkg/grpcclient"
	"github.com/bulkhead/bulkhead/services/connection/internal/store"
)

// ReasonTenantNotDeleting is the FAILED_PRECONDITION reason of an OffboardTenant for a tenant
// identity does not report DELETING. Part of the API.
const ReasonTenantNotDeleting = "TENANT_NOT_DELETING"

// ReasonOffboardingDeadline is the revocation_failure_reason of the revocations OffboardTenant
// gives up with abandon_pending.
const ReasonOffboardingDeadline = "tenant offboarding deadline passed"

// TenantStates reports identity's lifecycle state of a tenant (*identity.Client).
type TenantStates interface {
	TenantState(ctx context.Context, tenantID string) (authn.TenantState, error)
}

// OffboardResult says what an offboarding did.
type OffboardResult struct {
	// Revoked connections went through the RevokeConnection path (provider revocation,
	// broker credential deleted, or pending while the provider fails).
	Revoked int
	// Pending connections could not reach the vault-broker (identity or the broker refused the
	// tenant): they were marked revoked with revocation_state pending and their credential is
	// left where it is.
	Pending int
}

// TenantOffboarding is where a tenant's offboarding stands (OffboardTenant), counted over all
// of the tenant's connections.
type TenantOffboarding struct {
	// Revoked connections have a final revocation: confirmed, not supported, or failed (the
	// proto's definition, so Failed is part of Revoked).
	Revoked int
	// Pending connections wait for the provider (or were never revoked: a failure stopped the
	// call before them). The saga calls again until none is.
	Pending int
	// Failed connections' revocation was given up (REVOCATION_STATE_FAILED).
	Failed int
}

// offboardPageSize is the page in which offboarding reads a tenant's connections.
const offboardPageSize = 200

// OffboardUser revokes every user-level connection userID owns in tenantID: identity removed
// the member. Org-level connections — including those the user created — stay. It acts as
// the tenant's background principal (see offboard), never as the user, who no longer exists
// for identity. A tenant or user with no connection here is nothing to do.
func (a *App) OffboardUser(ctx context.Context, tenantID, userID string) (OffboardResult, error) {
	return a.offboard(ctx, tenantID, store.Filter{Scope: store.ScopeUser}, func(c store.Connection) bool {
		return c.OwnerUserID == userID
	})
}

// OffboardTenant is the connection service's step of identity's tenant-deletion saga
// (TenantOffboardingService.OffboardTenant): it revokes every connection of tenantID, which
// identity must report DELETING (FAILED_PRECONDITION TENANT_NOT_DELETING otherwise, so no
// caller can revoke a live tenant's connections through it). With abandonPending, every
// revocation still pending afterwards is given up: failed with ReasonOffboardingDeadline and
// its credential deleted, best effort. It answers where the whole tenant stands, so calling it
// again — it is idempotent — tells the saga what is still pending.
//
// Identity issues the tenant's background token for a DELETING tenant to a service holding
// tenants.offboard (this one), so the provider is asked to revoke and the credential is deleted
// in the vault-broker exactly as for RevokeConnection; revocations the provider has not
// confirmed stay pending for the background worker, whose backoff this call respects (a
// pending revocation not yet due is counted, not retried).
func (a *App) OffboardTenant(ctx context.Context, tenantID string, abandonPending bool) (TenantOffboarding, error) {
	if a.tenants == nil {
		return TenantOffboarding{}, apierr.Internal(errors.New("app: OffboardTenant needs the tenant states"))
	}
	st, err := a.tenants.TenantState(ctx, tenantID)
	if err != nil {
		return TenantOffboarding{}, err
	}
	if st != authn.StateDeleting {
		return TenantOffboarding{}, apierr.FailedPrecondition(ReasonTenantNotDeleting,
			"identity does not report the tenant DELETING: only a tenant being deleted is offboarded")
	}
	if _, err := a.offboard(ctx, tenantID, store.Filter{}, func(store.Connection) bool { return true }); err != nil {
		return TenantOffboarding{}, err
	}
	if abandonPending {
		if err := a.abandonPending(ctx, tenantID); err != nil {
			return TenantOffboarding{}, err
		}
	}
	var out TenantOffboarding
	err = a.eachConnection(ctx, tenantID, store.Filter{}, func(c store.Connection) {
		switch {
		case c.Status == store.StatusRevoked && c.RevocationState.Final():
			out.Revoked++
			if c.RevocationState == store.RevocationFailed {
				out.Failed++
			}
		default:
			out.Pending++
		}
	})
	return out, err
}

// eachConnection calls fn with every connection of tenantID that f matches, in admin
// visibility (every user-level connection too) — for revoke-only paths that never hand out a
// credential. A tenant id this service has no rows for is nothing to do.
func (a *App) eachConnection(ctx context.Context, tenantID string, f store.Filter, fn func(store.Connection)) error {
	actor := store.Actor{TenantID: tenantID, Admin: true}
	page := store.Page{Size: offboardPageSize}
	for {
		conns, next, err := a.store.ListConnections(ctx, actor, f, page)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, c := range conns {
			fn(c)
		}
		if next == nil {
			return nil
		}
		page.After = next
	}
}

// offboard revokes the connections of tenantID that f and match select and that are not
// revoked yet, and retries the pending revocations among them whose next attempt is due.
//
// The vault-broker is called with the tenant's background token: identity's ExchangeToken
// with a tenant and no user or subject token (sub svc:connection, the tenant's id, tenant
// scopes, audience the broker — never Vault). The broker accepts it for credential writes
// because the hop comes from the connection service (its credentialWriters rule admits a
// `svc:` principal scoped to a tenant), and logs in to the tenant's Vault role by exchanging
// that token as its subject, exactly as for a user's call. For a DELETING tenant identity
// issues it too, because this service holds tenants.offboard.
//
// Identity refuses that token for a suspended or deleted tenant (and for a DELETING one if the
// service lacks tenants.offboard), and the broker may refuse the tenant itself. Then the
// connections are still marked revoked — nothing hands them out from that commit on — with
// revocation_state pending, and the credential is neither read (so the provider is not
// called) nor deleted: for a deleted tenant the vault-broker's DeprovisionTenant removes the
// tenant's whole Vault layout. Connections already pending are left alone then, so doing it
// again changes nothing.
func (a *App) offboard(ctx context.Context, tenantID string, f store.Filter, match func(store.Connection) bool) (OffboardResult, error) {
	var res OffboardResult
	// Admin visibility: every user-level connection of the tenant, on a path that revokes and
	// never hands out a credential.
	actor := store.Actor{TenantID: tenantID, Admin: true}
	now := a.now()
	var ids []string
	err := a.eachConnection(ctx, tenantID, f, func(c store.Connection) {
		if match(c) && (c.Status != store.StatusRevoked || (c.RevocationState == store.RevocationPending && !now.Before(c.RevocationNextAt))) {
			ids = append(ids, c.ID)
		}
	})
	if err != nil || len(ids) == 0 {
		return res, err
	}

	ctx, reachable, err := a.actForTenant(ctx, tenantID)
	if err != nil {
		return res, err
	}
	if !reachable {
		a.log.WarnContext(ctx, "offboarding: identity refuses a token for the tenant; marking its connections revoked, revocation pending",
			"tenant_id", tenantID)
	}

	for _, id := range ids {
		err := a.store.WithLockedConnection(ctx, actor, id, func(ctx context.Context, l store.Locked) error {
			conn := l.Connection()
			if conn.Status == store.StatusRevoked && (conn.RevocationState != store.RevocationPending || a.now().Before(conn.RevocationNextAt)) {
				return nil // done, or retried by someone else since the list
			}
			if reachable {
				_, err := a.revokeLocked(ctx, l)
				if err == nil || !refused(err) {
					if err == nil {
						res.Revoked++
					}
					return err
				}
				// The broker refused the tenant after identity issued the token (it was
				// suspended or deleted in between): fall through to pending.
			}
			if conn.Status == store.StatusRevoked {
				return nil // already pending; nothing new to record
			}
			next := a.now().Add(revocationBackoff(conn.RevocationAttempts))
			if _, err := l.Revoke(ctx, store.RevocationPending, next, a.now()); err != nil {
				return err
			}
			res.Pending++
			return nil
		})
		if errors.Is(err, store.ErrNotFound) {
			continue // gone since the list
		}
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// abandonPending gives up every pending revocation of tenantID: the tenant's offboarding
// deadline has passed. Each becomes failed (ReasonOffboardingDeadline, connection.revocation_failed)
// whether or not its credential can be deleted: deleting it is best effort here, because right
// after this step the saga has the vault-broker delete the tenant's whole Vault layout
// (DeprovisionTenant), credentials included — a failed delete must not hold up the tenant's
// deletion. When identity will not issue the tenant's token the broker is not asked at all.
func (a *App) abandonPending(ctx context.Context, tenantID string) error {
	var ids []string
	err := a.eachConnection(ctx, tenantID, store.Filter{Status: store.StatusRevoked}, func(c store.Connection) {
		if c.RevocationState == store.RevocationPending {
			ids = append(ids, c.ID)
		}
	})
	if err != nil || len(ids) == 0 {
		return err
	}
	ctx, reachable, err := a.actForTenant(ctx, tenantID)
	if err != nil {
		return err
	}
	actor := store.Actor{TenantID: tenantID, Admin: true}
	for _, id := range ids {
		err := a.store.WithLockedConnection(ctx, actor, id, func(ctx context.Context, l store.Locked) error {
			if l.Connection().RevocationState != store.RevocationPending {
				return nil // final since the list
			}
			if !reachable {
				out, err := l.FailRevocation(ctx, ReasonOffboardingDeadline, a.now())
				if err == nil {
					a.log.WarnContext(ctx, "revocation at the provider given up; the credential goes with the tenant's Vault layout",
						"tenant_id", tenantID, "connection_id", id, "reason", out.RevocationFailureReason)
				}
				return err
			}
			_, err := a.failRevocation(ctx, l, ReasonOffboardingDeadline, false)
			return err
		})
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	return nil
}

// refused reports whether identity or the vault-broker refused to act for the tenant at all
// (suspended, deleted, unknown), as opposed to failing transiently.
func refused(err error) bool {
	if apierr.Is(err, apierr.ReasonTenantSuspended) {
		return true
	}
	switch status.Code(err) {
	case codes.PermissionDenied, codes.Unauthenticated, codes.NotFound:
		return true
	}
	return false
}

// actForTenant returns ctx acting for tenantID with the tenant's background token. reachable
// is false, with no error, when identity refuses that token (the tenant is suspended, or no
// longer DELETING): the caller then records what it can without the broker.
func (a *App) actForTenant(ctx context.Context, tenantID string) (_ context.Context, reachable bool, _ error) {
	tok, err := a.userTokens.UserToken(ctx, tenantID, "")
	switch {
	case err == nil:
		return grpcclient.ActAs(ctx, tenantID, tok), true, nil
	case refused(err):
		return ctx, false, nil
	default:
		return ctx, false, err
	}
}
