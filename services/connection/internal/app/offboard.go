package app

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/pkg/grpcclient"
	"github.com/bulkhead/bulkhead/services/connection/internal/store"
)

// OffboardResult says what an offboarding did. A second run over the same event finds
// nothing left to do: every count is zero.
type OffboardResult struct {
	// Revoked connections went through the RevokeConnection path (provider revocation,
	// broker credential deleted, or pending while the provider fails).
	Revoked int
	// Pending connections could not reach the vault-broker (it refuses a deleted or suspended
	// tenant): they were marked revoked with revocation_state pending and their credential
	// is left where it is.
	Pending int
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

// OffboardTenant revokes every connection of tenantID: the tenant was deleted.
func (a *App) OffboardTenant(ctx context.Context, tenantID string) (OffboardResult, error) {
	return a.offboard(ctx, tenantID, store.Filter{}, func(store.Connection) bool { return true })
}

// offboard revokes the connections of tenantID that f and match select and that are not
// revoked for good yet.
//
// The vault-broker is called with the tenant's background token: identity's ExchangeToken
// with a tenant and no user or subject token (sub svc:connection, the tenant's id, tenant
// scopes, audience the broker — never Vault). The broker accepts it for credential writes
// because the hop comes from the connection service (its credentialWriters rule admits a
// `svc:` principal scoped to a tenant), and logs in to the tenant's Vault role by exchanging
// that token as its subject, exactly as for a user's call.
//
// Identity refuses that token for a suspended or deleted tenant (and the broker would refuse
// the tenant anyway). Then the connections are still marked revoked — nothing hands them out
// from that commit on — with revocation_state pending, and the credential is neither read
// (so the provider is not called) nor deleted: for a deleted tenant the vault-broker's
// DeprovisionTenant removes the tenant's whole Vault layout. Connections already pending are
// left alone then, so re-processing the event changes nothing.
func (a *App) offboard(ctx context.Context, tenantID string, f store.Filter, match func(store.Connection) bool) (OffboardResult, error) {
	var res OffboardResult
	// Admin visibility: every user-level connection of the tenant, on a path that revokes and
	// never hands out a credential.
	actor := store.Actor{TenantID: tenantID, Admin: true}
	var ids []string
	var page store.Page
	page.Size = offboardPageSize
	for {
		conns, next, err := a.store.ListConnections(ctx, actor, f, page)
		if errors.Is(err, store.ErrNotFound) {
			return res, nil // not a tenant id this service could have rows for
		}
		if err != nil {
			return res, err
		}
		for _, c := range conns {
			if match(c) && (c.Status != store.StatusRevoked || c.RevocationState == store.RevocationPending) {
				ids = append(ids, c.ID)
			}
		}
		if next == nil {
			break
		}
		page.After = next
	}
	if len(ids) == 0 {
		return res, nil
	}

	reachable := true
	tok, err := a.userTokens.UserToken(ctx, tenantID, "")
	switch {
	case err == nil:
		ctx = grpcclient.ActAs(ctx, tenantID, tok)
	case refused(err):
		reachable = false
		a.log.WarnContext(ctx, "offboarding: identity refuses a token for the tenant; marking its connections revoked, revocation pending",
			"tenant_id", tenantID, "error", err.Error())
	default:
		return res, err
	}

	for _, id := range ids {
		err := a.store.WithLockedConnection(ctx, actor, id, func(ctx context.Context, l store.Locked) error {
			conn := l.Connection()
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
