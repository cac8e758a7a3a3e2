package app

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/pkg/authz"
	"github.com/bulkhead/bulkhead/pkg/claims"
	"github.com/bulkhead/bulkhead/services/identity/internal/store"
	"github.com/bulkhead/bulkhead/services/identity/internal/token"
)

// Audiences: the services a token may be for.
const (
	AudienceIdentity    = "bulkhead.identity"
	AudienceConnection  = "bulkhead.connection"
	AudienceVaultBroker = "bulkhead.vaultbroker"
	AudienceSync        = "bulkhead.sync"
	AudienceVault       = "bulkhead.vault"
)

// DefaultAudience is the audience of an issued token that asks for none: every Bulkhead
// service, but not Vault — a token Vault accepts is obtained only through ExchangeToken, by a
// service that has to act on the tenant's secrets.
var DefaultAudience = []string{AudienceIdentity, AudienceConnection, AudienceVaultBroker, AudienceSync}

// AllAudiences is every audience a token may carry.
var AllAudiences = append(slices.Clone(DefaultAudience), AudienceVault)

// Issuer signs tokens (token.Issuer).
type Issuer interface {
	Issue(ctx context.Context, g token.Grant) (string, time.Time, error)
}

// SubjectVerifier verifies a subject token presented to ExchangeToken, accepting any Bulkhead
// audience; errors are apierr errors as authn.Verifier returns them.
type SubjectVerifier interface {
	Verify(ctx context.Context, token string) (*claims.Claims, error)
}

// TokenStore is what the token use cases read.
type TokenStore interface {
	store.Credentials
	TenantStatus(ctx context.Context, tenantID string) (store.TenantStatus, error)
}

// PlatformClient is a platform credential: a Bulkhead service (KindService) or a platform
// operator (KindOperator), configured on identity. Only the SHA-256 of its secret is kept.
type PlatformClient struct {
	ClientID     string
	SecretSHA256 [sha256.Size]byte
	Kind         claims.Kind
	Scopes       []string
}

// Issued is a signed token and when it expires.
type Issued struct {
	Token     string
	ExpiresAt time.Time
}

// Tokens are the token use cases.
type Tokens struct {
	store    TokenStore
	issuer   Issuer
	subjects SubjectVerifier
	clients  map[string]PlatformClient
	clock    Clock
}

// NewTokens returns the token use cases. clients are the platform credentials.
func NewTokens(s TokenStore, issuer Issuer, subjects SubjectVerifier, clients []PlatformClient, clock Clock) (*Tokens, error) {
	byID := make(map[string]PlatformClient, len(clients))
	for _, c := range clients {
		if c.Kind != claims.KindService && c.Kind != claims.KindOperator {
			return nil, fmt.Errorf("platform client %q: kind must be svc or op", c.ClientID)
		}
		if _, dup := byID[c.ClientID]; dup {
			return nil, fmt.Errorf("platform client %q configured twice", c.ClientID)
		}
		byID[c.ClientID] = c
	}
	return &Tokens{store: s, issuer: issuer, subjects: subjects, clients: byID, clock: clock}, nil
}

// badCredential is the one answer to every credential problem: the caller is not told whether
// the key was unknown, wrong, revoked or expired.
func badCredential(cause error) error {
	return apierr.Unauthenticated("invalid credentials").WithCause(cause)
}

func audienceOr(aud []string) []string {
	if len(aud) == 0 {
		return slices.Clone(DefaultAudience)
	}
	return aud
}

// IssueWithAPIKey exchanges a tenant API key for a token. The key names its tenant, so the
// lookup runs in that tenant's scope.
func (t *Tokens) IssueWithAPIKey(ctx context.Context, key string, audience []string) (*Issued, error) {
	tenantID, lookupID, ok := parseAPIKey(key)
	if !ok {
		return nil, badCredential(errors.New("malformed api key"))
	}
	p, err := t.store.AuthenticateAPIKey(ctx, tenantID, lookupID, t.clock.now(), hashMatches(key))
	if errors.Is(err, store.ErrNotFound) {
		return nil, badCredential(err)
	}
	if err != nil {
		return nil, err
	}
	// Only now, with the key proven, may the answer say anything about the tenant.
	if p.TenantStatus != store.TenantActive {
		return nil, apierr.TenantSuspended()
	}
	g := token.Grant{TenantID: tenantID, Audience: audienceOr(audience)}
	if p.Key.UserID != "" {
		g.Kind, g.Subject, g.Roles = claims.KindUser, p.Key.UserID, []string{string(p.Role)}
	} else {
		g.Kind, g.Subject, g.Scopes = claims.KindServiceAccount, p.Key.ServiceAccountID, tenantScopes(p.Scopes)
	}
	return t.issue(ctx, g)
}

// tenantScopes keeps the scopes that are tenant permissions. Service account scopes were
// checked when stored; filtering again means a scope later removed from the tenant set can
// never reach a token.
func tenantScopes(scopes []string) []string {
	var out []string
	for _, s := range scopes {
		if authz.IsTenantPermission(authz.Permission(s)) {
			out = append(out, s)
		}
	}
	return out
}

// IssueWithPlatformCredential exchanges a platform credential for a token with no tenant.
func (t *Tokens) IssueWithPlatformCredential(ctx context.Context, clientID, secret string, audience []string) (*Issued, error) {
	sum := sha256.Sum256([]byte(secret))
	c, known := t.clients[clientID]
	// Compare even for an unknown client, so timing does not tell which client ids exist.
	match := subtle.ConstantTimeCompare(sum[:], c.SecretSHA256[:]) == 1
	if !known || !match {
		return nil, badCredential(errors.New("bad platform credential"))
	}
	return t.issue(ctx, token.Grant{
		Kind: c.Kind, Subject: c.ClientID, Scopes: slices.Clone(c.Scopes), Audience: audienceOr(audience),
	})
}

// ExchangeInput is a token-exchange request (RFC 8693 semantics).
type ExchangeInput struct {
	// SubjectToken, when set, is a token the calling service received for the principal it
	// acts for.
	SubjectToken string
	// Without a subject token: the tenant to act in, and the user to act for (empty: the
	// tenant's background work).
	TenantID string
	UserID   string
	Audience []string
}

// Exchange issues a token for the calling service (caller, a `svc:` principal with
// tokens.exchange) to act for someone; the service is recorded as the actor (`act.sub`).
//   - With a subject token: the token is verified (any Bulkhead audience, tenant kill switch
//     included) and the new token keeps its tenant, subject, roles and scopes. Only tokens of a
//     tenant are accepted: a service cannot borrow an operator's or another service's standing.
//   - With a user: the user must be a current member; the role comes from the database.
//   - Otherwise the token is the service's own (sub svc:<name>, so no separate actor) within
//     the tenant, with the caller's scopes cut down to tenant permissions.
func (t *Tokens) Exchange(ctx context.Context, caller *claims.Claims, in ExchangeInput) (*Issued, error) {
	if caller.Kind != claims.KindService {
		return nil, apierr.PermissionDenied("only Bulkhead services exchange tokens")
	}
	actor := caller.SubjectString()
	// A token for Vault unlocks a tenant's secrets, so it is issued only against proof that a
	// caller really presented that tenant's token (see forVault below). Without a subject
	// token a service could mint one for any tenant, which would give it a standing credential
	// reaching every tenant's Vault identity — exactly what the per-tenant roles exist to prevent.
	forVault := slices.Contains(in.Audience, AudienceVault)
	if forVault && in.SubjectToken == "" {
		return nil, apierr.PermissionDenied("a token for Vault requires a subject token")
	}
	if in.SubjectToken != "" {
		sub, err := t.subjects.Verify(ctx, in.SubjectToken)
		if err != nil {
			if apierr.Is(err, apierr.ReasonTenantSuspended) || apierr.Is(err, apierr.ReasonUnavailable) {
				return nil, err
			}
			return nil, apierr.Unauthenticated("invalid subject token").WithCause(err)
		}
		if sub.TenantID == "" {
			return nil, apierr.Unauthenticated("invalid subject token").WithCause(errors.New("subject token has no tenant"))
		}
		// A token the caller obtained for itself (its own tenant background token, or one it
		// exchanged before and so is the actor of) proves nothing about who called it: without
		// this a service could launder a subject-less exchange into a Vault token.
		if forVault && (sub.Actor == actor || (sub.Kind == claims.KindService && sub.Subject == caller.Subject)) {
			return nil, apierr.PermissionDenied("a token for Vault requires a subject token the caller did not obtain itself")
		}
		return t.issue(ctx, token.Grant{
			Kind: sub.Kind, Subject: sub.Subject, TenantID: sub.TenantID,
			Roles: sub.Roles, Scopes: sub.Scopes, Audience: in.Audience, Actor: actor,
		})
	}
	if in.TenantID == "" {
		return nil, apierr.InvalidArgument("tenant_id", "tenant_id is required without subject_token")
	}
	if in.UserID != "" {
		role, status, err := t.store.MemberRole(ctx, in.TenantID, in.UserID)
		if err != nil {
			return nil, storeError(err, "member")
		}
		if status != store.TenantActive {
			return nil, apierr.TenantSuspended()
		}
		return t.issue(ctx, token.Grant{
			Kind: claims.KindUser, Subject: in.UserID, TenantID: in.TenantID,
			Roles: []string{string(role)}, Audience: in.Audience, Actor: actor,
		})
	}
	status, err := t.store.TenantStatus(ctx, in.TenantID)
	if err != nil {
		return nil, storeError(err, "tenant")
	}
	scopes := tenantScopes(caller.Scopes)
	switch {
	case status == store.TenantActive:
	case status == store.TenantDeleting && caller.HasScope(string(authz.TenantsOffboard)):
		// The services finishing the tenant's offboarding keep acting for it; the scope on the
		// token is what every verifier admits a DELETING tenant's token by (authn.StateDeleting).
		scopes = append(scopes, string(authz.TenantsOffboard))
	default:
		return nil, apierr.TenantSuspended()
	}
	return t.issue(ctx, token.Grant{
		Kind: claims.KindService, Subject: caller.Subject, TenantID: in.TenantID,
		Scopes: scopes, Audience: in.Audience,
	})
}

func (t *Tokens) issue(ctx context.Context, g token.Grant) (*Issued, error) {
	tok, exp, err := t.issuer.Issue(ctx, g)
	if err != nil {
		return nil, fmt.Errorf("issue token: %w", err)
	}
	return &Issued{Token: tok, ExpiresAt: exp}, nil
}
