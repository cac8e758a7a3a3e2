// Package store is the connection service's storage contract: what the use cases in
// internal/app may ask of the database, and the promises every implementation keeps. The one
// implementation is store/postgres; its conformance tests run against a real PostgreSQL server.
//
// Every operation is scoped by an Actor (or, for tables without a user axis, a tenant id) that
// comes from verified claims: the implementation scopes its transaction to the actor's tenant
// and user, and the database's row-level security then hides every other tenant's rows and
// every user-level connection the actor may not see. Such a connection is therefore
// indistinguishable from a missing one: both answer ErrNotFound.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/bulkhead/bulkhead/pkg/outbox"
)

// Errors every implementation returns (possibly wrapped). The use cases translate them into
// apierr errors; nothing else about the database reaches them.
var (
	// ErrNotFound: the resource does not exist in the actor's view — including when it exists
	// in another tenant, or is another user's user-level connection.
	ErrNotFound = errors.New("store: not found")
	// ErrIdempotencyKeyTaken: a connection with the same idempotency key exists (possibly
	// committed concurrently); look it up and answer with it.
	ErrIdempotencyKeyTaken = errors.New("store: idempotency key already used")
	// ErrRevoked: the connection is revoked, which is final; the change was not made.
	ErrRevoked = errors.New("store: connection is revoked")
	// ErrNotDeletable: the connection is not revoked, or its revocation is still pending.
	ErrNotDeletable = errors.New("store: connection is not revoked with a final revocation state")
)

// AuthType is how a connection authenticates (the connections.auth_type values).
type AuthType string

// Auth types.
const (
	AuthOAuth2            AuthType = "oauth2"
	AuthClientCredentials AuthType = "client_credentials"
	AuthAPIKey            AuthType = "api_key"
	AuthBasic             AuthType = "basic"
)

// Scope is who may use a connection.
type Scope string

// Scopes.
const (
	ScopeOrg  Scope = "org"
	ScopeUser Scope = "user"
)

// Status is a connection's lifecycle state.
type Status string

// Statuses. Revoked is final.
const (
	StatusActive      Status = "active"
	StatusNeedsReauth Status = "needs_reauth"
	StatusDisabled    Status = "disabled"
	StatusRevoked     Status = "revoked"
)

// RevocationState is where revocation at the provider stands; "" means not revoked.
type RevocationState string

// Revocation states.
const (
	RevocationNone         RevocationState = ""
	RevocationPending      RevocationState = "pending"
	RevocationConfirmed    RevocationState = "confirmed"
	RevocationNotSupported RevocationState = "not_supported"
	// RevocationFailed: revocation at the provider was given up (Connection.RevocationFailureReason
	// says why); the credential was deleted here.
	RevocationFailed RevocationState = "failed"
)

// Final reports whether s is a final revocation state: nothing is retried any more, and the
// connection may be deleted.
func (s RevocationState) Final() bool {
	return s == RevocationConfirmed || s == RevocationNotSupported || s == RevocationFailed
}

// MaxFailureReason bounds stored failure reasons (the columns' check constraints); longer ones
// are cut.
const MaxFailureReason = 200

// EventType is an outbox event type (the outbox table's check constraint lists the same set).
type EventType string

// Outbox event types.
const (
	EventCreated       EventType = "connection.created"
	EventRefreshed     EventType = "connection.refreshed"
	EventRefreshFailed EventType = "connection.refresh_failed"
	EventRecovered     EventType = "connection.recovered"
	EventRevoked       EventType = "connection.revoked"
	EventDeleted       EventType = "connection.deleted"
	EventDisabled      EventType = "connection.disabled"
	EventEnabled       EventType = "connection.enabled"
	EventReauthorized  EventType = "connection.reauthorized"
	// EventRevocationFailed: revocation at the provider was given up (payload "reason").
	EventRevocationFailed EventType = "connection.revocation_failed"
)

// Actor is whom a call acts for, from verified claims.
type Actor struct {
	TenantID string
	// UserID is the acting user; empty for service accounts and services. It decides which
	// user-level connections are visible.
	UserID string
	// Admin makes every user-level connection of the tenant visible (metadata, revocation,
	// disabling). Set it only for a verified connection admin and only on paths that never
	// hand out a credential.
	Admin bool
}

// Connection is a stored connection; it never holds a secret. Zero times mean unset.
type Connection struct {
	TenantID            string
	ID                  string
	Integration         string
	AuthType            AuthType
	Scope               Scope
	OwnerUserID         string
	Creator             string
	Status              Status
	LastRefreshAt       time.Time
	LastFailureAt       time.Time
	LastFailureReason   string
	ConsecutiveFailures int
	AccessExpiresAt     time.Time
	RefreshExpiresAt    time.Time
	NextCheckAt         time.Time
	Fields              map[string]string
	Tags                []string
	GrantedScopes       []string
	RevocationState     RevocationState
	RevocationAttempts  int
	RevocationNextAt    time.Time
	// RevocationFailureReason says why revocation failed (RevocationFailed only); secret-free.
	RevocationFailureReason string
	// RevokedAt is when the connection was first revoked (the give-up period starts there).
	RevokedAt time.Time
	// CredentialVersion is the vault-broker version of the credential this row describes.
	CredentialVersion int64
	IdempotencyKey    string
	CreatedAt         time.Time
	UpdatedAt         time.Time
	// IntegrationEnabled is the tenant's setting for the integration at read time (true when
	// the tenant never changed it).
	IntegrationEnabled bool
}

// NewConnection is a connection to insert; ID is chosen by the caller (a random UUID, also the
// credential's id in the vault-broker, where the credential was stored first).
type NewConnection struct {
	ID                string
	Integration       string
	AuthType          AuthType
	Scope             Scope
	OwnerUserID       string // required iff Scope is ScopeUser
	Creator           string
	Fields            map[string]string
	Tags              []string
	GrantedScopes     []string
	CredentialVersion int64
	AccessExpiresAt   time.Time
	RefreshExpiresAt  time.Time
	NextCheckAt       time.Time
	IdempotencyKey    string
	At                time.Time // recorded as the first successful refresh (the credential works)
}

// CredentialUpdate records a new credential version after a refresh, a check or a
// re-authorization. Zero times clear the column (a token without expiry has none).
type CredentialUpdate struct {
	CredentialVersion int64
	AccessExpiresAt   time.Time
	RefreshExpiresAt  time.Time
	NextCheckAt       time.Time
	// GrantedScopes replaces the granted scopes when not nil.
	GrantedScopes []string
	// Fields replaces the connection's fields when not nil (re-authorization).
	Fields map[string]string
	At     time.Time
}

// Failure records a failed refresh or check.
type Failure struct {
	At time.Time
	// Reason is short and secret-free ("invalid_grant", "provider answered 503").
	Reason string
	// NeedsReauth moves an active connection to needs_reauth: only the user can fix it.
	NeedsReauth bool
	// NextCheckAt, when not zero, replaces next_check_at (credentials without expiry).
	NextCheckAt time.Time
}

// Filter narrows ListConnections; zero values match everything.
type Filter struct {
	Integration string
	Scope       Scope
	Status      Status
}

// Cursor marks a position in a list ordered by (CreatedAt, ID), newest first.
type Cursor struct {
	CreatedAt time.Time
	ID        string
}

// Page asks for at most Size items after After (nil: from the start).
type Page struct {
	Size  int
	After *Cursor
}

// Event is an outbox row, as read back.
type Event struct {
	ID           string
	Type         EventType
	ConnectionID string
	Payload      map[string]any
	CreatedAt    time.Time
}

// Locked is a connection whose row is locked (SELECT … FOR UPDATE) in an open transaction.
// Every method writes in that transaction, with its outbox event; the writes commit when the
// function given to WithLockedConnection returns nil, and are rolled back otherwise.
type Locked interface {
	// Connection is the row as read under the lock, updated by each method below.
	Connection() Connection
	// RecordRefresh stores a refreshed credential's version and health, clears the failure
	// count and, when the connection was failing (failures or needs_reauth), sets it active
	// again. Events: connection.refreshed, plus connection.recovered after failures. A
	// disabled connection stays disabled.
	RecordRefresh(ctx context.Context, u CredentialUpdate) (Connection, error)
	// RecordFailure counts a failed refresh and, with f.NeedsReauth, moves an active
	// connection to needs_reauth. Event: connection.refresh_failed.
	RecordFailure(ctx context.Context, f Failure) (Connection, error)
	// Reauthorize stores a credential obtained by a new authorization of the same connection,
	// sets it active (unless disabled) and clears failures. Events: connection.reauthorized,
	// plus connection.recovered after failures.
	Reauthorize(ctx context.Context, u CredentialUpdate) (Connection, error)
	// SetEnabled disables an active or needs_reauth connection, or re-enables a disabled one
	// (as active). Unchanged connections write nothing. Events: connection.disabled,
	// connection.enabled.
	SetEnabled(ctx context.Context, enabled bool, at time.Time) (Connection, error)
	// Revoke marks the connection revoked with state (pending with nextAttempt, confirmed or
	// not_supported), recording at as RevokedAt on the first call. A revoked connection only
	// moves from pending to a final state. Event: connection.revoked on the first call only.
	Revoke(ctx context.Context, state RevocationState, nextAttempt time.Time, at time.Time) (Connection, error)
	// FailRevocation gives up revocation at the provider: the connection becomes revoked (when
	// it was not yet) with state failed and reason (secret-free, non-empty, cut to
	// MaxFailureReason). A final state is left as it is. Events: connection.revoked when the
	// connection was not revoked yet, then connection.revocation_failed.
	FailRevocation(ctx context.Context, reason string, at time.Time) (Connection, error)
	// Delete removes the connection's row, which must be revoked with a final revocation
	// state (confirmed, not_supported or failed; ErrNotDeletable otherwise — the database's
	// policy refuses it too). Event: connection.deleted, kept in the outbox.
	Delete(ctx context.Context, at time.Time) error
}

// Connections stores connections.
type Connections interface {
	// CreateConnection inserts c with a connection.created event. ErrIdempotencyKeyTaken when
	// c.IdempotencyKey is already used in the tenant; ErrNotFound when the actor may not
	// write a connection of that scope and owner (row-level security refused it).
	CreateConnection(ctx context.Context, a Actor, c NewConnection) (Connection, error)
	// GetConnection returns the connection, or ErrNotFound when the actor may not see it.
	GetConnection(ctx context.Context, a Actor, id string) (Connection, error)
	// GetConnectionByIdempotencyKey returns the connection created with key, or ErrNotFound.
	GetConnectionByIdempotencyKey(ctx context.Context, a Actor, key string) (Connection, error)
	// ListConnections lists the connections the actor may see, newest first. next is nil on
	// the last page.
	ListConnections(ctx context.Context, a Actor, f Filter, p Page) (conns []Connection, next *Cursor, err error)
	// WithLockedConnection locks the connection's row in a transaction scoped to a and runs
	// fn; fn's writes through Locked commit when it returns nil. Concurrent callers for the
	// same connection — in this process or any other — run one at a time. ErrNotFound when
	// the actor may not see it; fn's error is returned unchanged.
	WithLockedConnection(ctx context.Context, a Actor, id string, fn func(ctx context.Context, l Locked) error) error
	// Events lists the outbox events of a connection, oldest first (tests and the relay).
	Events(ctx context.Context, tenantID, connectionID string) ([]Event, error)
}

// State is a pending OAuth2 authorization.
type State struct {
	TenantID string
	ID       string
	// SecretHash is SHA-256 of the state's secret part.
	SecretHash []byte
	Principal  string
	// UserID is the user who started it; empty for service accounts (org-level only).
	UserID          string
	Integration     string
	Scope           Scope
	ConnectionID    string // re-authorize in place; empty creates
	RequestedScopes []string
	Fields          map[string]string
	Tags            []string
	ReturnURL       string
	// OAuthClientID is the tenant's own client id used for the flow; empty: the platform's app.
	OAuthClientID string
	// VerifierCiphertext is the PKCE verifier encrypted with the tenant's transit key.
	VerifierCiphertext string
	CreatedAt          time.Time
	ExpiresAt          time.Time
}

// States stores pending OAuth2 authorizations.
type States interface {
	// CreateState inserts s, first deleting the tenant's expired states.
	CreateState(ctx context.Context, s State) error
	// ConsumeState deletes and returns the state with id and secretHash in tenantID. It
	// returns ErrNotFound when there is none, when the secret does not match (the row is
	// kept) or when it has expired at now (the row is deleted). A state is consumed once:
	// concurrent callbacks with the same state get it at most once.
	ConsumeState(ctx context.Context, tenantID, id string, secretHash []byte, now time.Time) (State, error)
}

// Settings is a tenant's configuration of one integration, as stored.
type Settings struct {
	TenantID      string
	Integration   string
	Enabled       bool
	OAuthClientID string
	// OAuthSecretID is the vault-broker credential id of the tenant's client secret.
	OAuthSecretID   string
	AllowedScopes   []string
	ConnectionScope Scope // "" means the catalog's default
	CreatedAt       time.Time
	UpdatedAt       time.Time
}

// SettingsChange is applied to the current settings (or the defaults) by UpdateSettings.
type SettingsChange func(s *Settings) error

// IntegrationSettings stores per-tenant integration settings. No row means the defaults:
// enabled, no own OAuth app, no extra scopes, the catalog's connection scope.
type IntegrationSettings interface {
	// GetSettings returns the tenant's settings for integration, or ErrNotFound when the
	// tenant never changed the defaults.
	GetSettings(ctx context.Context, tenantID, integration string) (Settings, error)
	// ListSettings returns every settings row of the tenant.
	ListSettings(ctx context.Context, tenantID string) ([]Settings, error)
	// UpdateSettings locks (or creates) the settings row, applies change and writes the
	// result; change's error aborts and is returned unchanged.
	UpdateSettings(ctx context.Context, tenantID, integration string, change SettingsChange) (Settings, error)
}

// Store is everything the connection service stores.
type Store interface {
	Connections
	States
	IntegrationSettings
}

// EventCursor is a position in the outbox: the writing transaction's id and the row's
// sequence number. The zero value is the start.
type EventCursor = outbox.Cursor

// StoredEvent is an outbox row as Bulkhead services read it across tenants.
type StoredEvent struct {
	TenantID     string
	ID           string
	Type         EventType
	ConnectionID string
	Payload      map[string]any
	CreatedAt    time.Time
	Cursor       EventCursor
}

// EventLog reads the outbox for Bulkhead services (EventService.ListEvents). Separate from
// Store because it is the one read that spans tenants.
type EventLog interface {
	// ListEvents returns at most limit events after after, of the given types (all when
	// empty), across every tenant, ordered by cursor. It returns only events whose writing
	// transaction is older than every transaction still running, so an event never appears
	// behind a cursor already returned. Callers must have authorized a Bulkhead service.
	ListEvents(ctx context.Context, after EventCursor, types []EventType, limit int) ([]StoredEvent, error)
}

// DueWork is what the background worker must do with a connection.
type DueWork string

// Background work.
const (
	// DueRevocation: a pending provider revocation whose next attempt is due.
	DueRevocation DueWork = "revocation"
	// DueRefresh: an active connection whose token expires within the margin, whose check is
	// due, or (OAuth2) whose refresh token has not been used for the idle interval.
	DueRefresh DueWork = "refresh"
)

// Due is a connection the background worker must look at.
type Due struct {
	TenantID    string
	ID          string
	OwnerUserID string
	Work        DueWork
	// Idle is set for a refresh asked only because the refresh token has not been used for
	// the idle interval (the token itself is not near expiry).
	Idle bool
}

// DueQuery says what counts as due at Now.
type DueQuery struct {
	Now time.Time
	// Margin: access tokens expiring before Now+Margin are due for a refresh.
	Margin time.Duration
	// Idle: OAuth2 connections not refreshed (or created) since Now-Idle are due.
	Idle time.Duration
	// Limit bounds the answer.
	Limit int
}

// Maintenance finds background work across tenants (the one other cross-tenant read).
type Maintenance interface {
	// DueConnections lists connections due for background work, grouped by tenant. Refreshes
	// of connections that failed recently are held back (exponential in the failure count,
	// up to an hour) so a failing provider is not asked on every pass.
	DueConnections(ctx context.Context, q DueQuery) ([]Due, error)
}
