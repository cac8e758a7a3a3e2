// Package store is identity's storage contract: what the use cases in internal/app may ask of
// the database, and the promises every implementation keeps. The one implementation is
// store/postgres; its conformance tests run against a real PostgreSQL server.
//
// Every tenant-owned operation takes the tenant id as its first argument after the context.
// That id must come from verified claims (or, for platform operators and Bulkhead services,
// from a request they were authorized to make about any tenant): the implementation scopes its
// transaction to it, and the database's row-level security then hides every other tenant. A
// resource of another tenant is therefore indistinguishable from a missing one: both answer
// ErrNotFound.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/bulkhead/bulkhead/pkg/authz"
)

// Errors every implementation returns (possibly wrapped). The use cases translate them into
// apierr errors; nothing else about the database reaches them.
var (
	// ErrNotFound: the resource does not exist in the tenant the call is scoped to — including
	// when it exists in another tenant.
	ErrNotFound = errors.New("store: not found")
	// ErrAlreadyExists: a uniqueness rule refused the write (a member's e-mail, a service
	// account's name).
	ErrAlreadyExists = errors.New("store: already exists")
	// ErrLastOwner: the change would leave the tenant without an owner.
	ErrLastOwner = errors.New("store: tenant would have no owner")
	// ErrIdempotencyKeyTaken: another CreateTenant with the same idempotency key committed
	// first; look the record up and replay it.
	ErrIdempotencyKeyTaken = errors.New("store: idempotency key already used")
)

// TenantStatus is a tenant's lifecycle state, as stored.
type TenantStatus string

// Tenant states. A deleting tenant never comes back; it becomes deleted once the lifecycle
// saga has offboarded it from every service.
const (
	TenantActive    TenantStatus = "active"
	TenantSuspended TenantStatus = "suspended"
	TenantDeleting  TenantStatus = "deleting"
	TenantDeleted   TenantStatus = "deleted"
)

// LifecycleStep is a step of the tenant lifecycle saga, run by another service.
type LifecycleStep string

// The saga's steps (the tenants table's check constraint lists the same set).
const (
	StepNone                LifecycleStep = ""
	StepVaultProvision      LifecycleStep = "vault.provision"
	StepConnectionsOffboard LifecycleStep = "connections.offboard"
	StepSyncPurge           LifecycleStep = "sync.purge"
	StepVaultDeprovision    LifecycleStep = "vault.deprovision"
)

// Lifecycle is where a tenant's lifecycle saga stands.
type Lifecycle struct {
	// Step is still to be done (StepNone: nothing is).
	Step LifecycleStep
	// Attempts at Step that did not complete it.
	Attempts int
	// LastError is Step's last failure, secret-free, at most 500 characters.
	LastError string
	// NextAt is when Step is due (zero iff Step is StepNone).
	NextAt time.Time
	// Done lists the completed steps in order.
	Done []string
	// DeleteRequestedAt is when DeleteTenant was called (zero before).
	DeleteRequestedAt time.Time
}

// Tenant is one customer of the platform.
type Tenant struct {
	ID            string
	Name          string
	Status        TenantStatus
	SuspendReason string
	CreatedAt     time.Time
	UpdatedAt     time.Time
	Lifecycle     Lifecycle
}

// Member is a user's membership in a tenant.
type Member struct {
	TenantID    string
	UserID      string
	Email       string
	DisplayName string
	// Role is empty only in a CreateTenant replay whose owner has since been removed.
	Role      authz.Role
	CreatedAt time.Time
}

// ServiceAccount is a tenant's non-human principal.
type ServiceAccount struct {
	TenantID    string
	ID          string
	Name        string
	Description string
	Scopes      []string
	CreatedAt   time.Time
}

// APIKey is a key's metadata; the secret itself is never stored.
type APIKey struct {
	TenantID string
	ID       string
	// LookupID is the key's public lookup id (16 hex digits), unique in its tenant.
	LookupID string
	// Exactly one of UserID and ServiceAccountID is set.
	UserID           string
	ServiceAccountID string
	CreatedAt        time.Time
	// Zero values mean: never expires, not revoked, never used.
	ExpiresAt  time.Time
	RevokedAt  time.Time
	LastUsedAt time.Time
}

// NewAPIKey is a key to insert. ID and LookupID are chosen by the caller (random), SecretHash
// is the SHA-256 of the whole key string.
type NewAPIKey struct {
	ID               string
	LookupID         string
	SecretHash       []byte
	UserID           string
	ServiceAccountID string
	ExpiresAt        time.Time // zero: never
}

// Event is an outbox event, written in the same transaction as the change it announces.
type Event struct {
	Type    string
	Payload map[string]any
}

// Outbox event types (the outbox table's check constraint lists the same set).
const (
	EventTenantCreated   = "tenant.created"
	EventTenantSuspended = "tenant.suspended"
	EventTenantResumed   = "tenant.resumed"
	EventTenantDeleting  = "tenant.deleting"
	EventTenantDeleted   = "tenant.deleted"
	EventMemberRemoved   = "member.removed"
)

// Cursor marks a position in a list ordered by (CreatedAt, ID), oldest first.
type Cursor struct {
	CreatedAt time.Time
	ID        string
}

// Page asks for at most Size items after After (nil: from the start).
type Page struct {
	Size  int
	After *Cursor
}

// Store is everything identity stores.
type Store interface {
	Tenants
	Members
	ServiceAccounts
	APIKeys
	Credentials
}

// NewTenant is everything CreateTenant writes in one transaction.
type NewTenant struct {
	ID          string
	Name        string
	Owner       NewMember
	OwnerKey    NewAPIKey
	Idempotency *IdempotencyRecord // nil without an idempotency key
}

// IdempotencyRecord remembers which tenant a CreateTenant request produced.
type IdempotencyRecord struct {
	// KeyHash is the hex SHA-256 of the client's idempotency key.
	KeyHash string
	// RequestHash is the SHA-256 of the request's canonical form.
	RequestHash []byte
	TenantID    string
	OwnerUserID string
	APIKeyID    string
	ExpiresAt   time.Time
}

// TenantCreation is what CreateTenant (or its replay) produced.
type TenantCreation struct {
	Tenant Tenant
	Owner  Member
	Key    APIKey
}

// Tenants stores tenants and their lifecycle.
type Tenants interface {
	// CreateTenant writes, in one transaction, the tenant, its owner (user + membership with
	// role owner), the owner's API key, the idempotency record (when set) and a tenant.created
	// outbox event. When in.Idempotency's key is held by a live record (committed by another
	// request, even concurrently), it writes nothing and returns ErrIdempotencyKeyTaken. An
	// expired record is replaced.
	CreateTenant(ctx context.Context, in NewTenant) (*TenantCreation, error)
	// LookupIdempotency returns the live record for keyHash, or ErrNotFound when there is none
	// or it has expired.
	LookupIdempotency(ctx context.Context, keyHash string) (*IdempotencyRecord, error)
	// ReplayTenantCreation answers a retried CreateTenant from rec, in rec's tenant. When the
	// recorded key has never been used and is not revoked, the tenant is active and the owner
	// is still a member, it revokes that key, inserts fresh instead, points the record at it
	// and returns rotated=true; concurrent replays rotate once (the record row is locked).
	// Otherwise it returns the recorded key's metadata and rotated=false.
	ReplayTenantCreation(ctx context.Context, rec IdempotencyRecord, fresh NewAPIKey) (res *TenantCreation, rotated bool, err error)
	// GetTenant returns tenantID, or ErrNotFound.
	GetTenant(ctx context.Context, tenantID string) (*Tenant, error)
	// ListTenants lists every tenant, oldest first, for platform operators. It is the one read
	// that is not scoped to a tenant (the tenants table admits platform reads). next is nil on
	// the last page.
	ListTenants(ctx context.Context, page Page) (tenants []Tenant, next *Cursor, err error)
	// UpdateTenant locks tenantID's row and calls change with it. change edits the tenant's
	// Status, SuspendReason and Lifecycle in place and returns the event announcing the
	// change, or nil. The row is written when change modified it or returned an event; the
	// update and the event commit together; change's error aborts both and is returned
	// unchanged. ErrNotFound for a missing tenant.
	UpdateTenant(ctx context.Context, tenantID string, change func(t *Tenant) (*Event, error)) (*Tenant, error)
	// DueLifecycle returns up to limit tenants whose lifecycle step is due at now, most
	// overdue first. It reads across tenants (a platform read); claim each one with
	// UpdateTenant before acting on it.
	DueLifecycle(ctx context.Context, now time.Time, limit int) ([]Tenant, error)
	// TenantStatus returns tenantID's status, or ErrNotFound: the kill switch's question.
	TenantStatus(ctx context.Context, tenantID string) (TenantStatus, error)
}

// NewMember is a member to add. UserID is used only when the e-mail is new to the tenant.
type NewMember struct {
	UserID      string
	Email       string
	DisplayName string
	Role        authz.Role
}

// MemberCheck inspects the current state of a member inside the transaction that changes it
// and returns an error to refuse the change (returned unchanged).
type MemberCheck func(target Member) error

// Members stores users and their memberships. Membership changes serialize per tenant (they
// lock the tenant row), so "at least one owner" holds under concurrency.
type Members interface {
	// AddMember adds a membership, creating the user when the e-mail (case-insensitive) is new
	// to the tenant and reusing the existing user otherwise. ErrAlreadyExists when that user
	// is already a member; ErrNotFound when the tenant does not exist.
	AddMember(ctx context.Context, tenantID string, m NewMember) (*Member, error)
	// GetMember returns a current member, or ErrNotFound.
	GetMember(ctx context.Context, tenantID, userID string) (*Member, error)
	// ListMembers lists current members, oldest first.
	ListMembers(ctx context.Context, tenantID string, page Page) (members []Member, next *Cursor, err error)
	// UpdateMemberRole sets userID's role after check accepted the current membership.
	// ErrNotFound for a non-member; ErrLastOwner when it would demote the only owner.
	UpdateMemberRole(ctx context.Context, tenantID, userID string, role authz.Role, check MemberCheck) (*Member, error)
	// RemoveMember deletes userID's membership after check accepted it, revokes the user's API
	// keys and writes a member.removed event (payload tenant_id, user_id), all in one
	// transaction. ErrNotFound for a non-member; ErrLastOwner when it would remove the only
	// owner.
	RemoveMember(ctx context.Context, tenantID, userID string, check MemberCheck) error
}

// ServiceAccounts stores service accounts. Deleted accounts are invisible to every method.
type ServiceAccounts interface {
	// CreateServiceAccount inserts sa (ID chosen by the caller). ErrAlreadyExists when a live
	// account has the name; ErrNotFound when the tenant does not exist.
	CreateServiceAccount(ctx context.Context, tenantID string, sa ServiceAccount) (*ServiceAccount, error)
	// GetServiceAccount returns a live account, or ErrNotFound.
	GetServiceAccount(ctx context.Context, tenantID, id string) (*ServiceAccount, error)
	// ListServiceAccounts lists live accounts, oldest first.
	ListServiceAccounts(ctx context.Context, tenantID string, page Page) (accounts []ServiceAccount, next *Cursor, err error)
	// DeleteServiceAccount marks the account deleted and revokes its keys in one transaction.
	// ErrNotFound when it does not exist or is already deleted.
	DeleteServiceAccount(ctx context.Context, tenantID, id string) error
}

// APIKeys stores API key metadata and hashes.
type APIKeys interface {
	// CreateAPIKey inserts k for a live service account or a current member. ErrNotFound when
	// the owner is neither.
	CreateAPIKey(ctx context.Context, tenantID string, k NewAPIKey) (*APIKey, error)
	// ListAPIKeys lists the tenant's keys (revoked and expired included), oldest first.
	ListAPIKeys(ctx context.Context, tenantID string, page Page) (keys []APIKey, next *Cursor, err error)
	// RevokeAPIKey sets the key's revocation time unless it is already revoked (idempotent:
	// the first revocation time stays), after check accepted the key. ErrNotFound for a
	// missing key.
	RevokeAPIKey(ctx context.Context, tenantID, keyID string, check func(APIKey) error) (*APIKey, error)
}

// KeyPrincipal is what an API key authenticates as.
type KeyPrincipal struct {
	Key          APIKey
	TenantStatus TenantStatus
	// Role is the user's current role (user keys).
	Role authz.Role
	// Scopes are the service account's scopes (service account keys).
	Scopes []string
}

// Credentials answers authentication questions.
type Credentials interface {
	// AuthenticateAPIKey finds the key lookupID in tenantID and calls verify with its stored
	// hash; verify must compare in constant time. It returns ErrNotFound — one answer for
	// every reason, so callers cannot tell them apart — when the key does not exist, verify
	// says no, the key is revoked or expired at now, or its owner is no longer a member / is a
	// deleted service account. On success it records the use in last_used_at (at most about
	// once a minute per key, so busy keys cost no write per token) and returns the principal
	// with the tenant's status, which the caller must check.
	AuthenticateAPIKey(ctx context.Context, tenantID, lookupID string, now time.Time, verify func(hash []byte) bool) (*KeyPrincipal, error)
	// MemberRole returns userID's current role in tenantID and the tenant's status.
	// ErrNotFound when the tenant does not exist or the user is not a member.
	MemberRole(ctx context.Context, tenantID, userID string) (authz.Role, TenantStatus, error)
}
