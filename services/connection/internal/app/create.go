package app

import (
	"context"
	"errors"
	"time"

	"golang.org/x/oauth2/clientcredentials"

	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/services/connection/internal/store"
)

// CredentialRequest creates an API-key, basic-auth or client-credentials connection.
type CredentialRequest struct {
	Integration string
	Scope       store.Scope // "" means the integration's
	Fields      map[string]string
	// Secret is the API key, the password or the client secret; Username the basic-auth
	// user or the client id.
	Secret, Username string
	Tags             []string
	IdempotencyKey   string
}

// CreateCredentialConnection checks the credential with the provider (test endpoint, or a
// client-credentials token request), stores it in the vault-broker under a fresh connection
// id (check-and-set version 0: it cannot overwrite anything), then records the connection.
// When recording fails the credential is deleted again.
func (a *App) CreateCredentialConnection(ctx context.Context, req CredentialRequest) (store.Connection, error) {
	c, err := caller(ctx)
	if err != nil {
		return store.Connection{}, err
	}
	ic, err := a.integration(ctx, c.TenantID, req.Integration)
	if err != nil {
		return store.Connection{}, err
	}
	p := ic.provider
	authType := authTypeOf(p)
	if authType == store.AuthOAuth2 {
		return store.Connection{}, apierr.FailedPrecondition(ReasonWrongAuthType, "%s connects through OAuth2: use StartAuthorization", p.Key)
	}
	if !ic.settings.Enabled {
		return store.Connection{}, apierr.FailedPrecondition(ReasonIntegrationDisabled, "the integration is disabled for this tenant")
	}
	scope, err := resolveScope(c, ic, req.Scope)
	if err != nil {
		return store.Connection{}, err
	}
	if err := validTags(req.Tags); err != nil {
		return store.Connection{}, err
	}
	actor := readActor(c)
	if req.IdempotencyKey != "" {
		if conn, err := a.store.GetConnectionByIdempotencyKey(ctx, actor, req.IdempotencyKey); err == nil {
			return replay(c.SubjectString(), req, conn)
		} else if !errors.Is(err, store.ErrNotFound) {
			return store.Connection{}, err
		}
	}
	e, err := resolveFields(p, req.Fields)
	if err != nil {
		return store.Connection{}, err
	}

	now := a.now()
	var data map[string]string
	var access time.Time
	switch authType {
	case store.AuthAPIKey:
		data = map[string]string{credAPIKey: req.Secret}
	case store.AuthBasic:
		if req.Username == "" {
			return store.Connection{}, apierr.InvalidArgument("username", "basic authentication needs a username")
		}
		data = map[string]string{credUsername: req.Username, credPassword: req.Secret}
	case store.AuthClientCredentials:
		if req.Username == "" {
			return store.Connection{}, apierr.InvalidArgument("username", "the client credentials grant needs the client id in username")
		}
		cfg := clientcredentials.Config{ClientID: req.Username, ClientSecret: req.Secret, TokenURL: e.TokenURL,
			Scopes: p.OAuth2.DefaultScopes, AuthStyle: a.oauthConfig(p, e, OAuthClient{}, nil).Endpoint.AuthStyle}
		tok, err := cfg.Token(a.httpContext(ctx, e))
		if err != nil {
			return store.Connection{}, credentialRefused(classifyTokenError(err))
		}
		data, access, _ = tokenData(p, tok, nil, "", now)
		data[credClientID], data[credClientSecret] = req.Username, req.Secret
	}
	if authType != store.AuthClientCredentials {
		if err := a.testCredential(ctx, p, e, data); err != nil {
			return store.Connection{}, credentialRefused(err)
		}
	}

	id := newID()
	version, err := a.creds.Put(ctx, c.TenantID, id, data, 0)
	if err != nil {
		return store.Connection{}, err
	}
	nc := store.NewConnection{
		ID: id, Integration: p.Key, AuthType: authType, Scope: scope, Creator: c.SubjectString(),
		Fields: e.Fields, Tags: req.Tags, CredentialVersion: version, AccessExpiresAt: access,
		IdempotencyKey: req.IdempotencyKey, At: now,
	}
	if scope == store.ScopeUser {
		nc.OwnerUserID = c.UserID()
	}
	if access.IsZero() && (authType == store.AuthClientCredentials || e.TestURL != "") {
		nc.NextCheckAt = now.Add(a.checkEvery) // tested periodically: there is no expiry to refresh by
	}
	conn, err := a.store.CreateConnection(ctx, actor, nc)
	if err != nil {
		a.forgetCredential(ctx, c.TenantID, id)
		if errors.Is(err, store.ErrIdempotencyKeyTaken) {
			if conn, err := a.store.GetConnectionByIdempotencyKey(ctx, actor, req.IdempotencyKey); err == nil {
				return replay(c.SubjectString(), req, conn)
			}
		}
		return store.Connection{}, storeError(err, "connection")
	}
	return conn, nil
}

// replay answers a retried create from the connection the first call made, if the retry is
// the same request by the same principal.
func replay(subject string, req CredentialRequest, conn store.Connection) (store.Connection, error) {
	if conn.Creator != subject || conn.Integration != req.Integration {
		e := apierr.AlreadyExists("idempotency key")
		e.Reason = apierr.ReasonIdempotencyReuse
		e.Message = "idempotency key was already used with a different request"
		return store.Connection{}, e
	}
	return conn, nil
}

// forgetCredential deletes a credential stored for a connection that was not recorded. The
// request may have been cancelled; the clean-up still runs, bounded.
func (a *App) forgetCredential(ctx context.Context, tenantID, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := a.creds.Delete(ctx, tenantID, id); err != nil {
		a.log.ErrorContext(ctx, "orphaned credential could not be deleted", "connection_id", id, "error", err.Error())
	}
}

// credentialRefused maps a failed credential check.
func credentialRefused(err error) error {
	if errors.Is(err, errRejected) {
		return apierr.InvalidArgument("secret", "the provider rejected the credential").WithCause(err)
	}
	var pe *providerError
	if errors.As(err, &pe) {
		return unavailable(err)
	}
	return err
}
