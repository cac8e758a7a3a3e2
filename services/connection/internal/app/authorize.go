package app

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"golang.org/x/oauth2"

	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/pkg/claims"
	"github.com/bulkhead/bulkhead/pkg/grpcclient"
	"github.com/bulkhead/bulkhead/services/connection/internal/broker"
	"github.com/bulkhead/bulkhead/services/connection/internal/store"
)

// Reasons of the callback's errors.
const (
	ReasonAuthorizationDenied = "AUTHORIZATION_DENIED"
	ReasonAuthorizationFailed = "AUTHORIZATION_FAILED"
	ReasonOAuthAppChanged     = "OAUTH_APP_CHANGED"
)

// AuthorizationRequest starts an OAuth2 authorization.
type AuthorizationRequest struct {
	Integration string
	Scope       store.Scope // "" means the integration's
	Fields      map[string]string
	// Scopes are requested beyond the integration's defaults.
	Scopes []string
	// ConnectionID re-authorizes that connection in place; "" creates one.
	ConnectionID string
	ReturnURL    string
	Tags         []string
}

// Authorization is where to send the user's browser.
type Authorization struct {
	URL       string
	State     string
	ExpiresAt time.Time
}

// StartAuthorization checks the request, keeps a single-use state bound to the tenant, the
// user, the integration and the scope (with the PKCE verifier encrypted by the tenant's own
// transit key) and returns the provider's authorization URL.
func (a *App) StartAuthorization(ctx context.Context, req AuthorizationRequest) (Authorization, error) {
	c, err := caller(ctx)
	if err != nil {
		return Authorization{}, err
	}
	ic, err := a.integration(ctx, c.TenantID, req.Integration)
	if err != nil {
		return Authorization{}, err
	}
	p := ic.provider
	if authTypeOf(p) != store.AuthOAuth2 {
		return Authorization{}, apierr.FailedPrecondition(ReasonWrongAuthType, "%s does not use the OAuth2 authorization code grant: use CreateCredentialConnection", p.Key)
	}
	if !ic.settings.Enabled {
		return Authorization{}, apierr.FailedPrecondition(ReasonIntegrationDisabled, "the integration is disabled for this tenant")
	}
	if err := validTags(req.Tags); err != nil {
		return Authorization{}, err
	}
	fields := req.Fields
	var scope store.Scope
	if req.ConnectionID != "" {
		conn, err := a.store.GetConnection(ctx, readActor(c), req.ConnectionID)
		if err != nil {
			return Authorization{}, storeError(err, "connection")
		}
		if scope, err = mayReauthorize(c, conn, p.Key, req.Scope); err != nil {
			return Authorization{}, err
		}
		if len(fields) == 0 {
			fields = conn.Fields
		}
	} else if scope, err = resolveScope(c, ic, req.Scope); err != nil {
		return Authorization{}, err
	}
	e, err := resolveFields(p, fields)
	if err != nil {
		return Authorization{}, err
	}
	scopes := slices.Clone(p.OAuth2.DefaultScopes)
	for _, s := range req.Scopes {
		if !slices.Contains(scopes, s) {
			if !slices.Contains(ic.settings.AllowedScopes, s) {
				return Authorization{}, apierr.InvalidArgument("scopes", "scope %q is not allowed by the tenant's integration settings", s)
			}
			scopes = append(scopes, s)
		}
	}
	if req.ReturnURL != "" && !a.returnURLAllowed(req.ReturnURL) {
		return Authorization{}, apierr.InvalidArgument("return_url", "return_url does not start with an allowed prefix")
	}
	app, err := a.oauthAppFor(ctx, c.TenantID, p.Key, ic.settings)
	if err != nil {
		return Authorization{}, err
	}

	verifier := oauth2.GenerateVerifier()
	sealed, err := a.creds.Encrypt(ctx, c.TenantID, []byte(verifier))
	if err != nil {
		return Authorization{}, err
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return Authorization{}, err
	}
	now := a.now()
	st := store.State{
		TenantID: c.TenantID, ID: newID(), Principal: c.SubjectString(), UserID: c.UserID(),
		Integration: p.Key, Scope: scope, ConnectionID: req.ConnectionID, RequestedScopes: scopes,
		Fields: e.Fields, Tags: req.Tags, ReturnURL: req.ReturnURL, OAuthClientID: app.ClientID,
		VerifierCiphertext: sealed, CreatedAt: now, ExpiresAt: now.Add(a.stateTTL),
	}
	sum := sha256.Sum256(secret)
	st.SecretHash = sum[:]
	if err := a.store.CreateState(ctx, st); err != nil {
		return Authorization{}, err
	}
	state := st.TenantID + "." + st.ID + "." + base64.RawURLEncoding.EncodeToString(secret)

	var opts []oauth2.AuthCodeOption
	if p.OAuth2.UsesPKCE() {
		opts = append(opts, oauth2.S256ChallengeOption(verifier))
	}
	for k, v := range p.OAuth2.AuthorizationParams {
		opts = append(opts, oauth2.SetAuthURLParam(k, v))
	}
	cfg := a.oauthConfig(p, e, app, scopes)
	if cfg.Scopes == nil && len(scopes) > 0 {
		opts = append(opts, oauth2.SetAuthURLParam("scope", p.OAuth2.JoinScopes(scopes)))
	}
	return Authorization{URL: cfg.AuthCodeURL(state, opts...), State: state, ExpiresAt: st.ExpiresAt}, nil
}

// mayReauthorize checks that c may re-authorize conn in place and returns its scope. Only
// the owner re-authorizes a user-level connection (an admin doing it would connect their own
// provider account to someone else's connection); connection admins re-authorize org-level
// ones.
func mayReauthorize(c *claims.Claims, conn store.Connection, integration string, requested store.Scope) (store.Scope, error) {
	switch {
	case conn.Integration != integration:
		return "", apierr.InvalidArgument("connection_id", "the connection belongs to another integration")
	case conn.Status == store.StatusRevoked:
		return "", apierr.FailedPrecondition(ReasonRevoked, "a revoked connection cannot be authorized again: create a new one")
	case requested != "" && requested != conn.Scope:
		return "", apierr.FailedPrecondition(ReasonScopeMismatch, "the connection is %s-level", conn.Scope)
	case conn.Scope == store.ScopeUser && conn.OwnerUserID != c.UserID():
		return "", apierr.PermissionDenied("only the owner re-authorizes a user-level connection")
	case conn.Scope == store.ScopeOrg && !IsAdmin(c):
		return "", apierr.PermissionDenied("only connection admins re-authorize org-level connections")
	}
	return conn.Scope, nil
}

func (a *App) returnURLAllowed(u string) bool {
	for _, p := range a.returnURLs {
		if p != "" && strings.HasPrefix(u, p) {
			return true
		}
	}
	return false
}

// CallbackResult is what the OAuth2 callback produced.
type CallbackResult struct {
	ConnectionID string
	// ReturnURL is where to send the browser ("" shows a page); set once the state is known.
	ReturnURL string
}

// errBadState answers every state that cannot be used, alike.
func errBadState() error {
	return apierr.InvalidArgument("state", "the authorization is unknown, expired or already completed")
}

// parseState splits "<tenant>.<id>.<secret>".
func parseState(state string) (tenant, id string, secret []byte, ok bool) {
	parts := strings.Split(state, ".")
	if len(parts) != 3 {
		return "", "", nil, false
	}
	t, err1 := uuid.Parse(parts[0])
	i, err2 := uuid.Parse(parts[1])
	s, err3 := base64.RawURLEncoding.DecodeString(parts[2])
	if err1 != nil || err2 != nil || err3 != nil || len(s) != 32 {
		return "", "", nil, false
	}
	return t.String(), i.String(), s, true
}

// CompleteAuthorization is the OAuth2 callback: it consumes the state (once), exchanges the
// code with the PKCE verifier, stores the tokens in the vault-broker and creates the
// connection — or re-authorizes the one named at the start, keeping its id. The browser brings
// no Bulkhead credential, so the service acts for the user who started the flow, through a
// token identity issues for that user (refused for a suspended tenant or a removed user).
// providerErr is the provider's `error` parameter, if any.
func (a *App) CompleteAuthorization(ctx context.Context, state, code, providerErr string) (CallbackResult, error) {
	tenant, id, secret, ok := parseState(state)
	if !ok {
		return CallbackResult{}, errBadState()
	}
	sum := sha256.Sum256(secret)
	st, err := a.store.ConsumeState(ctx, tenant, id, sum[:], a.now())
	if errors.Is(err, store.ErrNotFound) {
		return CallbackResult{}, errBadState()
	}
	if err != nil {
		return CallbackResult{}, err
	}
	res := CallbackResult{ReturnURL: st.ReturnURL}
	if providerErr != "" {
		return res, apierr.FailedPrecondition(ReasonAuthorizationDenied, "the provider did not authorize the connection")
	}
	if code == "" {
		return res, apierr.InvalidArgument("code", "the provider sent no authorization code")
	}
	tok, err := a.userTokens.UserToken(ctx, tenant, st.UserID)
	if err != nil {
		return res, err
	}
	ctx = grpcclient.ActAs(ctx, tenant, tok)

	ic, err := a.integration(ctx, tenant, st.Integration)
	if err != nil {
		return res, err
	}
	if !ic.settings.Enabled {
		return res, apierr.FailedPrecondition(ReasonIntegrationDisabled, "the integration is disabled for this tenant")
	}
	p := ic.provider
	app, err := a.oauthAppFor(ctx, tenant, p.Key, ic.settings)
	if err != nil {
		return res, err
	}
	if app.ClientID != st.OAuthClientID {
		return res, apierr.FailedPrecondition(ReasonOAuthAppChanged, "the integration's OAuth app changed during the authorization: start again")
	}
	verifier, err := a.creds.Decrypt(ctx, tenant, st.VerifierCiphertext)
	if err != nil {
		return res, err
	}
	e, err := resolveFields(p, st.Fields)
	if err != nil {
		return res, err
	}
	var opts []oauth2.AuthCodeOption
	if p.OAuth2.UsesPKCE() {
		opts = append(opts, oauth2.VerifierOption(string(verifier)))
	}
	token, err := a.oauthConfig(p, e, app, st.RequestedScopes).Exchange(a.httpContext(ctx, e), code, opts...)
	if err != nil {
		err = classifyTokenError(err)
		if errors.Is(err, errRejected) {
			return res, apierr.FailedPrecondition(ReasonAuthorizationFailed, "the provider refused the authorization code").WithCause(err)
		}
		if apierr.Is(err, ReasonEgressRefused) {
			return res, err
		}
		return res, unavailable(err)
	}

	now := a.now()
	data, access, refresh := tokenData(p, token, nil, app.ClientID, now)
	next := time.Time{}
	if access.IsZero() {
		next = now.Add(a.checkEvery)
	}
	granted := grantedScopes(p, data, st.RequestedScopes)
	actor := store.Actor{TenantID: tenant, UserID: st.UserID}
	if st.ConnectionID == "" {
		connID := newID()
		version, err := a.creds.Put(ctx, tenant, connID, data, 0)
		if err != nil {
			return res, err
		}
		nc := store.NewConnection{
			ID: connID, Integration: p.Key, AuthType: store.AuthOAuth2, Scope: st.Scope, Creator: st.Principal,
			Fields: e.Fields, Tags: st.Tags, GrantedScopes: granted, CredentialVersion: version,
			AccessExpiresAt: access, RefreshExpiresAt: refresh, NextCheckAt: next, At: now,
		}
		if st.Scope == store.ScopeUser {
			nc.OwnerUserID = st.UserID
		}
		if _, err := a.store.CreateConnection(ctx, actor, nc); err != nil {
			a.forgetCredential(ctx, tenant, connID)
			return res, storeError(err, "connection")
		}
		res.ConnectionID = connID
		return res, nil
	}
	err = a.store.WithLockedConnection(ctx, actor, st.ConnectionID, func(ctx context.Context, l store.Locked) error {
		conn := l.Connection()
		if conn.Status == store.StatusRevoked {
			return store.ErrRevoked
		}
		var expected int64
		cur, err := a.creds.Get(ctx, tenant, conn.ID, 0)
		switch {
		case err == nil:
			expected = cur.Version
		case !errors.Is(err, broker.ErrNotFound):
			return err
		}
		version, err := a.creds.Put(ctx, tenant, conn.ID, data, expected)
		if err != nil {
			return err
		}
		_, err = l.Reauthorize(ctx, store.CredentialUpdate{
			CredentialVersion: version, AccessExpiresAt: access, RefreshExpiresAt: refresh, NextCheckAt: next,
			GrantedScopes: granted, Fields: e.Fields, At: now,
		})
		return err
	})
	if err != nil {
		return res, storeError(err, "connection")
	}
	res.ConnectionID = st.ConnectionID
	return res, nil
}
