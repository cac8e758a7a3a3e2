package app

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/pkg/authz"
	"github.com/bulkhead/bulkhead/services/identity/internal/store"
)

// IdempotencyTTL is how long a CreateTenant idempotency key is remembered. Retries come within
// minutes; a day covers a client that retries after an outage, and the key may be reused after.
const IdempotencyTTL = 24 * time.Hour

// createRetries bounds how often CreateTenant goes round "key taken → look it up": one lap
// suffices unless the winning record expires in between.
const createRetries = 3

// Tenants are the tenant use cases.
type Tenants struct {
	store store.Tenants
	clock Clock
	// statusChanged is told about every status change after it commits (identity's own
	// verifier forgets its cached status, so the kill switch applies here at once, and the
	// lifecycle saga is woken for the step the change made due).
	statusChanged func(tenantID string)
	// onboard runs a new tenant's first lifecycle step before CreateTenant answers, so the
	// tenant is usable on return rather than a moment later (see Hooks).
	onboard func(ctx context.Context, tenantID string)
}

// Hooks are what the tenant use cases tell the rest of identity. Any may be nil.
type Hooks struct {
	// StatusChanged is called after a tenant's status changed (or after it was deleted).
	StatusChanged func(tenantID string)
	// Onboard is called after a tenant was created, before CreateTenant answers; it runs the
	// tenant's pending lifecycle step (provisioning it in Vault) for a bounded time. Whatever
	// it does not finish, the saga does later.
	Onboard func(ctx context.Context, tenantID string)
}

// NewTenants returns the tenant use cases.
func NewTenants(s store.Tenants, clock Clock, h Hooks) *Tenants {
	t := &Tenants{store: s, clock: clock, statusChanged: h.StatusChanged, onboard: h.Onboard}
	if t.statusChanged == nil {
		t.statusChanged = func(string) {}
	}
	if t.onboard == nil {
		t.onboard = func(context.Context, string) {}
	}
	return t
}

// CreateTenantInput is a self-service onboarding request.
type CreateTenantInput struct {
	Name             string
	OwnerEmail       string
	OwnerDisplayName string
	IdempotencyKey   string
}

// CreateTenantResult is what onboarding returns. Secret is the owner's API key, shown only
// here; empty on a replay whose key had already been used.
type CreateTenantResult struct {
	store.TenantCreation
	Secret   string
	Replayed bool
}

// Create onboards a tenant (see TenantService.CreateTenant). With an idempotency key:
//   - same key, same request → the first result again, Replayed. If the owner's key has never
//     been used, the caller evidently lost it: it is rotated and the new one returned;
//     otherwise no secret is returned.
//   - same key, different request → AlreadyExists, reason IDEMPOTENCY_KEY_REUSED.
//   - concurrent identical requests → one tenant; the others replay it.
//
// The idempotency key acts as a bearer secret until the owner key's first use (a replay before
// then returns a fresh owner key), so clients should use a random key (a UUID), not a name.
func (t *Tenants) Create(ctx context.Context, in CreateTenantInput) (*CreateTenantResult, error) {
	in.OwnerEmail = strings.TrimSpace(in.OwnerEmail)
	var rec *store.IdempotencyRecord
	if in.IdempotencyKey != "" {
		keySum := sha256.Sum256([]byte(in.IdempotencyKey))
		rec = &store.IdempotencyRecord{
			KeyHash:     hex.EncodeToString(keySum[:]),
			RequestHash: requestHash(in),
		}
	}
	for range createRetries {
		if rec != nil {
			res, found, err := t.replay(ctx, *rec)
			if found || err != nil {
				return res, err
			}
		}
		res, err := t.create(ctx, in, rec)
		if errors.Is(err, store.ErrIdempotencyKeyTaken) {
			continue // another request with this key committed first: replay it
		}
		return res, err
	}
	return nil, apierr.Aborted("concurrent requests with the same idempotency key, retry")
}

// requestHash identifies a request's content, so a replay can tell "same request" from "same
// key, other request". Fields are length-prefixed so no two requests encode alike.
func requestHash(in CreateTenantInput) []byte {
	h := sha256.New()
	for _, f := range []string{in.Name, strings.ToLower(in.OwnerEmail), in.OwnerDisplayName} {
		fmt.Fprintf(h, "%d:%s;", len(f), f)
	}
	return h.Sum(nil)
}

// replay answers from the record for want.KeyHash; found is false when there is none.
func (t *Tenants) replay(ctx context.Context, want store.IdempotencyRecord) (res *CreateTenantResult, found bool, err error) {
	rec, err := t.store.LookupIdempotency(ctx, want.KeyHash)
	if errors.Is(err, store.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	if !bytesEqual(rec.RequestHash, want.RequestHash) {
		e := apierr.AlreadyExists("idempotency key")
		e.Reason = apierr.ReasonIdempotencyReuse
		e.Message = "idempotency key was already used with a different request"
		return nil, true, e
	}
	fresh, err := newAPIKeyMaterial(rec.TenantID, rec.OwnerUserID, "", time.Time{})
	if err != nil {
		return nil, true, err
	}
	created, rotated, err := t.store.ReplayTenantCreation(ctx, *rec, fresh.stored)
	if err != nil {
		return nil, true, storeError(err, "tenant")
	}
	res = &CreateTenantResult{TenantCreation: *created, Replayed: true}
	if rotated {
		res.Secret = fresh.secret
	}
	return res, true, nil
}

func bytesEqual(a, b []byte) bool { return string(a) == string(b) }

func (t *Tenants) create(ctx context.Context, in CreateTenantInput, rec *store.IdempotencyRecord) (*CreateTenantResult, error) {
	tenantID, ownerID := uuid.NewString(), uuid.NewString()
	key, err := newAPIKeyMaterial(tenantID, ownerID, "", time.Time{})
	if err != nil {
		return nil, err
	}
	nt := store.NewTenant{
		ID:   tenantID,
		Name: in.Name,
		Owner: store.NewMember{
			UserID: ownerID, Email: in.OwnerEmail, DisplayName: in.OwnerDisplayName, Role: authz.RoleOwner,
		},
		OwnerKey: key.stored,
	}
	if rec != nil {
		r := *rec
		r.ExpiresAt = t.clock.now().Add(IdempotencyTTL)
		nt.Idempotency = &r
	}
	res, err := t.store.CreateTenant(ctx, nt)
	if err != nil {
		if errors.Is(err, store.ErrIdempotencyKeyTaken) {
			return nil, err
		}
		return nil, storeError(err, "tenant")
	}
	t.onboard(ctx, tenantID)
	// The response shows where onboarding stands; the creation itself is committed whatever
	// this read does.
	if tn, err := t.store.GetTenant(ctx, tenantID); err == nil {
		res.Tenant = *tn
	}
	return &CreateTenantResult{TenantCreation: *res, Secret: key.secret}, nil
}

// Get returns a tenant.
func (t *Tenants) Get(ctx context.Context, tenantID string) (*store.Tenant, error) {
	tn, err := t.store.GetTenant(ctx, tenantID)
	return tn, storeError(err, "tenant")
}

// List lists every tenant (platform operators).
func (t *Tenants) List(ctx context.Context, p PageRequest) ([]store.Tenant, string, error) {
	page, err := p.page()
	if err != nil {
		return nil, "", err
	}
	ts, next, err := t.store.ListTenants(ctx, page)
	if err != nil {
		return nil, "", storeError(err, "tenant")
	}
	return ts, encodePageToken(next), nil
}

// Suspend turns the kill switch on. Suspending a suspended tenant only updates the reason.
func (t *Tenants) Suspend(ctx context.Context, tenantID, reason string) (*store.Tenant, error) {
	return t.update(ctx, tenantID, func(tn *store.Tenant) (*store.Event, error) {
		switch tn.Status {
		case store.TenantDeleting, store.TenantDeleted:
			return nil, apierr.FailedPrecondition(ReasonTenantDeleted, "tenant is deleted")
		case store.TenantSuspended:
			if tn.SuspendReason == reason {
				return nil, nil
			}
			tn.SuspendReason = reason
			return &store.Event{Type: store.EventTenantSuspended, Payload: statusPayload(tn)}, nil
		}
		tn.Status, tn.SuspendReason = store.TenantSuspended, reason
		return &store.Event{Type: store.EventTenantSuspended, Payload: statusPayload(tn)}, nil
	})
}

// Resume lifts a suspension; resuming an active tenant changes nothing.
func (t *Tenants) Resume(ctx context.Context, tenantID string) (*store.Tenant, error) {
	return t.update(ctx, tenantID, func(tn *store.Tenant) (*store.Event, error) {
		switch tn.Status {
		case store.TenantDeleting, store.TenantDeleted:
			return nil, apierr.FailedPrecondition(ReasonTenantDeleted, "tenant is deleted")
		case store.TenantActive:
			return nil, nil
		}
		tn.Status, tn.SuspendReason = store.TenantActive, ""
		return &store.Event{Type: store.EventTenantResumed, Payload: statusPayload(tn)}, nil
	})
}

// Delete starts offboarding: the tenant becomes DELETING (its own principals are refused from
// this commit on) and the lifecycle saga's connections.offboard step is due at once, replacing
// any step still pending (a vault.provision that never ran leaves nothing to provision: the
// deprovision step that ends the saga is idempotent). Idempotent: deleting a deleting or
// deleted tenant writes nothing.
func (t *Tenants) Delete(ctx context.Context, tenantID string) (*store.Tenant, error) {
	now := t.clock.now()
	return t.update(ctx, tenantID, func(tn *store.Tenant) (*store.Event, error) {
		if tn.Status == store.TenantDeleting || tn.Status == store.TenantDeleted {
			return nil, nil
		}
		tn.Status, tn.SuspendReason = store.TenantDeleting, ""
		tn.Lifecycle = store.Lifecycle{
			Step: store.StepConnectionsOffboard, NextAt: now,
			Done: tn.Lifecycle.Done, DeleteRequestedAt: now,
		}
		return &store.Event{Type: store.EventTenantDeleting, Payload: statusPayload(tn)}, nil
	})
}

func statusPayload(tn *store.Tenant) map[string]any {
	return map[string]any{"tenant_id": tn.ID, "status": string(tn.Status)}
}

func (t *Tenants) update(ctx context.Context, tenantID string, change func(*store.Tenant) (*store.Event, error)) (*store.Tenant, error) {
	tn, err := t.store.UpdateTenant(ctx, tenantID, change)
	if err != nil {
		return nil, storeError(err, "tenant")
	}
	t.statusChanged(tenantID)
	return tn, nil
}

// Status returns a tenant's status (the kill switch's question).
func (t *Tenants) Status(ctx context.Context, tenantID string) (store.TenantStatus, error) {
	s, err := t.store.TenantStatus(ctx, tenantID)
	return s, storeError(err, "tenant")
}
