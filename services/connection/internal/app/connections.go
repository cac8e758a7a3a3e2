package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/services/connection/internal/broker"
	"github.com/bulkhead/bulkhead/services/connection/internal/store"
)

// revokeAttempts bounds the provider revocation calls made within one RevokeConnection; a
// revocation still unconfirmed after them stays pending and is retried by the background
// worker (internal/worker) once its backoff ends, or by the next call.
const revokeAttempts = 3

// GetConnection returns a connection the caller may see (admins: any of their tenant).
func (a *App) GetConnection(ctx context.Context, id string) (store.Connection, error) {
	c, err := caller(ctx)
	if err != nil {
		return store.Connection{}, err
	}
	conn, err := a.store.GetConnection(ctx, readActor(c), id)
	return conn, storeError(err, "connection")
}

// ListConnections lists the connections the caller may see, newest first.
func (a *App) ListConnections(ctx context.Context, f store.Filter, pageSize int, pageToken string) ([]store.Connection, string, error) {
	c, err := caller(ctx)
	if err != nil {
		return nil, "", err
	}
	after, err := DecodePageToken(pageToken)
	if err != nil {
		return nil, "", err
	}
	conns, next, err := a.store.ListConnections(ctx, readActor(c), f, store.Page{Size: pageSize, After: after})
	if err != nil {
		return nil, "", err
	}
	return conns, EncodePageToken(next), nil
}

// manage locks a connection the caller may manage and runs fn with it.
func (a *App) manage(ctx context.Context, id string, fn func(ctx context.Context, l store.Locked) error) error {
	c, err := caller(ctx)
	if err != nil {
		return err
	}
	err = a.store.WithLockedConnection(ctx, readActor(c), id, func(ctx context.Context, l store.Locked) error {
		if !canManage(c, l.Connection()) {
			return apierr.PermissionDenied("only the connection's owner or a connection admin may change it")
		}
		return fn(ctx, l)
	})
	return storeError(err, "connection")
}

// SetConnectionEnabled disables or re-enables a connection.
func (a *App) SetConnectionEnabled(ctx context.Context, id string, enabled bool) (store.Connection, error) {
	var out store.Connection
	err := a.manage(ctx, id, func(ctx context.Context, l store.Locked) error {
		var err error
		out, err = l.SetEnabled(ctx, enabled, a.now())
		return err
	})
	return out, err
}

// RevokeConnection revokes a connection: no one can use it from the moment it commits. The
// provider's revocation endpoint, when the catalog has one, is called with the stored token
// (up to revokeAttempts times); once the provider confirms — or when it cannot revoke — the
// credential is deleted from the vault-broker. While the provider has not confirmed, the
// connection stays revoked with revocation_state pending and the credential is kept (unusable:
// nothing hands out a revoked connection's credential) so the next RevokeConnection can retry;
// a revocation that can never succeed, or has not for the give-up period, ends failed with the
// credential deleted (revokeAtProvider). Idempotent.
func (a *App) RevokeConnection(ctx context.Context, id string) (store.Connection, error) {
	var out store.Connection
	err := a.manage(ctx, id, func(ctx context.Context, l store.Locked) error {
		var err error
		out, err = a.revokeLocked(ctx, l)
		return err
	})
	return out, err
}

// ReasonRevocationPending is the FAILED_PRECONDITION reason of a DeleteConnection whose
// revocation the provider has not confirmed yet.
const ReasonRevocationPending = "REVOCATION_PENDING"

// DeleteConnection revokes a connection when it is not yet revoked (RevokeConnection's path)
// and then deletes its row, with a connection.deleted event. Decision: a hard delete, and only
// once the revocation is final (confirmed, not supported, or given up as failed), so no row
// disappears while the provider may still be asked to revoke its tokens; a pending revocation is committed (for the worker to retry) and answers
// FAILED_PRECONDITION REVOCATION_PENDING. allowMissing turns NOT_FOUND into success, so a
// retried delete is idempotent.
func (a *App) DeleteConnection(ctx context.Context, id string, allowMissing bool) error {
	pending := false
	err := a.manage(ctx, id, func(ctx context.Context, l store.Locked) error {
		out, err := a.revokeLocked(ctx, l)
		if err != nil {
			return err
		}
		if out.RevocationState == store.RevocationPending {
			pending = true
			return nil // commit the pending revocation
		}
		return l.Delete(ctx, a.now())
	})
	switch {
	case err != nil && allowMissing && errors.Is(err, store.ErrNotFound):
		return nil
	case err != nil:
		return err
	case pending:
		return apierr.FailedPrecondition(ReasonRevocationPending,
			"the connection is revoked but the provider has not confirmed the revocation yet: it is retried, delete again later")
	}
	return nil
}

// revokeLocked is the revocation of a locked connection, shared by RevokeConnection, the
// worker's retries and offboarding (offboard.go); ctx must act for a principal the
// vault-broker accepts. A revocation the provider cannot ever confirm — or that stayed
// unconfirmed for the give-up period — ends failed, with the credential deleted.
func (a *App) revokeLocked(ctx context.Context, l store.Locked) (store.Connection, error) {
	conn := l.Connection()
	if conn.Status == store.StatusRevoked && conn.RevocationState != store.RevocationPending {
		return conn, nil
	}
	state, reason, err := a.revokeAtProvider(ctx, conn)
	if err != nil {
		return store.Connection{}, err
	}
	if state == store.RevocationFailed {
		return a.failRevocation(ctx, l, reason, true)
	}
	next := time.Time{}
	if state == store.RevocationPending {
		next = a.now().Add(revocationBackoff(conn.RevocationAttempts))
	}
	out, err := l.Revoke(ctx, state, next, a.now())
	if err != nil || state == store.RevocationPending {
		return out, err
	}
	// The row update commits only if the credential is gone: a failed delete leaves the
	// connection as it was, to be revoked again.
	return out, a.creds.Delete(ctx, conn.TenantID, conn.ID)
}

// failRevocation gives up the revocation of a locked connection: revoked, state failed with
// reason, connection.revocation_failed, and the credential deleted in the vault-broker — it
// revokes nothing any more and must not linger. With strict, a failed delete rolls the change
// back (to be given up again later); otherwise the delete is best effort (offboarding's
// deadline: see abandonPending).
func (a *App) failRevocation(ctx context.Context, l store.Locked, reason string, strict bool) (store.Connection, error) {
	conn := l.Connection()
	out, err := l.FailRevocation(ctx, reason, a.now())
	if err != nil {
		return store.Connection{}, err
	}
	a.log.WarnContext(ctx, "revocation at the provider given up; deleting the credential",
		"tenant_id", conn.TenantID, "connection_id", conn.ID, "integration", conn.Integration, "reason", out.RevocationFailureReason)
	if err := a.creds.Delete(ctx, conn.TenantID, conn.ID); err != nil {
		if strict {
			return store.Connection{}, err
		}
		a.log.WarnContext(ctx, "could not delete the credential of a given-up revocation",
			"tenant_id", conn.TenantID, "connection_id", conn.ID, "error", err.Error())
	}
	return out, nil
}

// revokeAtProvider revokes conn's tokens at the provider and says how it went: confirmed,
// not_supported, pending (retried later), or failed with a secret-free reason when asking
// again cannot help — the egress guard refuses the revocation endpoint, the provider refused
// the request for good (a 4xx other than 408/429), the credential is gone — or when the
// revocation has stayed unconfirmed for the give-up period since the connection was revoked.
func (a *App) revokeAtProvider(ctx context.Context, conn store.Connection) (store.RevocationState, string, error) {
	p, ok := a.catalog.Get(conn.Integration)
	if !ok || p.OAuth2 == nil || p.OAuth2.RevocationURL == "" {
		return store.RevocationNotSupported, "", nil
	}
	cred, err := a.creds.Get(ctx, conn.TenantID, conn.ID, 0)
	if errors.Is(err, broker.ErrNotFound) {
		// The tokens may still be valid at the provider, and nothing here can revoke them.
		return store.RevocationFailed, "credential missing: nothing to revoke the tokens with", nil
	}
	if err != nil {
		return "", "", err
	}
	e, err := p.Resolve(conn.Fields)
	if err != nil {
		return "", "", err
	}
	app, err := a.oauthApp(ctx, conn.TenantID, p.Key)
	if err != nil && !apierr.Is(err, ReasonOAuthAppMissing) {
		return "", "", err
	}
	for attempt := range revokeAttempts {
		err = a.revoke(ctx, p, e, app, cred.Data)
		if err == nil {
			return store.RevocationConfirmed, "", nil
		}
		if reason, ok := permanentRevocationFailure(err); ok {
			return store.RevocationFailed, reason, nil
		}
		a.log.WarnContext(ctx, "provider revocation failed", "integration", p.Key, "connection_id", conn.ID,
			"attempt", attempt+1, "error", err.Error())
		if ctx.Err() != nil {
			return store.RevocationPending, "", nil
		}
	}
	if since := conn.RevokedAt; !since.IsZero() && a.now().Sub(since) >= a.revocationGiveUp {
		return store.RevocationFailed, fmt.Sprintf("unconfirmed for the give-up period (%s); last: %s", a.revocationGiveUp, failureReason(err)), nil
	}
	return store.RevocationPending, "", nil
}

// permanentRevocationFailure says whether a failed revocation call can never succeed, and why
// (secret-free).
func permanentRevocationFailure(err error) (string, bool) {
	if apierr.Is(err, ReasonEgressRefused) {
		return "the egress policy refuses the revocation endpoint", true
	}
	var pe *providerError
	if errors.As(err, &pe) && pe.permanent {
		return pe.reason, true
	}
	return "", false
}

// failureReason is the secret-free description of a failed provider call.
func failureReason(err error) string {
	var pe *providerError
	if errors.As(err, &pe) {
		return pe.reason
	}
	return "provider call failed"
}
