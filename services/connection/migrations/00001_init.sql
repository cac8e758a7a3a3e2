-- The connection service's schema: connections, per-tenant integration settings, pending
-- OAuth2 authorizations, and the transactional outbox.
--
-- Isolation rules (pkg/pgtenant doc): every table has tenant_id, a unique (tenant_id, …) key,
-- ENABLE + FORCE ROW LEVEL SECURITY and policies on app.tenant_id. pgtenant.Migrate grants the
-- app role SELECT/INSERT/UPDATE/DELETE on every table; the policies are per command, so a
-- command without a policy matches no row (nobody deletes a connection row, the outbox is
-- append-only for the service).
--
-- Connections add a second axis, the user: a user-level connection is visible only to its
-- owner (app.user_id), except to a connection admin, whose transactions opt in with
-- app.connections_admin (see connection_visible).

-- +goose Up

-- connection_visible says whether the current transaction may see a connection of this scope
-- and owner (the tenant is checked by each policy). Org-level connections are visible to the
-- whole tenant; a user-level one to its owner, and to a connection admin's transaction.
--
-- The admin opt-in is bound to the transaction: the service sets app.connections_admin to
-- now()::text (transaction-local, and only when the verified claims make the caller a
-- connection admin), and now() is the transaction's start time. A value left behind — a
-- session-level set_config by a bug, a pooled connection reused — never equals a later
-- transaction's now(), so it cannot widen anyone else's transaction. Comparing text with text
-- in the same session keeps the check independent of time zone settings.
-- +goose StatementBegin
CREATE FUNCTION connection_visible(conn_scope text, conn_owner uuid) RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
        SELECT conn_scope = 'org'
            OR conn_owner = nullif(current_setting('app.user_id', true), '')::uuid
            OR coalesce(current_setting('app.connections_admin', true), '') = now()::text
    $$;
-- +goose StatementEnd

CREATE TABLE connections (
    tenant_id              uuid        NOT NULL,
    -- A random UUID: unguessable, and usable as the vault-broker's credential id as is.
    id                     uuid        NOT NULL,
    integration            text        NOT NULL CHECK (integration ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    auth_type              text        NOT NULL
                                       CHECK (auth_type IN ('oauth2', 'client_credentials', 'api_key', 'basic')),
    scope                  text        NOT NULL CHECK (scope IN ('org', 'user')),
    owner_user_id          uuid,
    -- The principal that created it: "user:<uuid>" or "sa:<uuid>".
    creator                text        NOT NULL CHECK (creator ~ '^(user|sa|svc):[A-Za-z0-9_.-]{1,64}$'),
    status                 text        NOT NULL DEFAULT 'active'
                                       CHECK (status IN ('active', 'needs_reauth', 'disabled', 'revoked')),
    -- Health.
    last_refresh_at        timestamptz,
    last_failure_at        timestamptz,
    last_failure_reason    text        NOT NULL DEFAULT '' CHECK (char_length(last_failure_reason) <= 200),
    consecutive_failures   integer     NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    access_expires_at      timestamptz,
    refresh_expires_at     timestamptz,
    -- When a credential without expiry is next tested (NULL: it has an expiry).
    next_check_at          timestamptz,
    fields                 jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(fields) = 'object'),
    tags                   text[]      NOT NULL DEFAULT '{}' CHECK (cardinality(tags) <= 20),
    granted_scopes         text[]      NOT NULL DEFAULT '{}',
    -- Provider-side revocation: '' (not revoked), pending, confirmed, not_supported.
    revocation_state       text        NOT NULL DEFAULT ''
                                       CHECK (revocation_state IN ('', 'pending', 'confirmed', 'not_supported')),
    revocation_attempts    integer     NOT NULL DEFAULT 0 CHECK (revocation_attempts >= 0),
    revocation_next_at     timestamptz,
    -- The vault-broker version of the credential this row describes (check-and-set input).
    credential_version     bigint      NOT NULL DEFAULT 0 CHECK (credential_version >= 0),
    -- CreateCredentialConnection's idempotency key, as sent (it is not a secret).
    idempotency_key        text        CHECK (char_length(idempotency_key) BETWEEN 1 AND 128),
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    -- A user-level connection has an owner; an org-level one has none.
    CHECK ((scope = 'user') = (owner_user_id IS NOT NULL)),
    -- Revoked exactly when revocation has started; nothing is usable without a credential.
    CHECK ((status = 'revoked') = (revocation_state <> '')),
    CHECK (status = 'revoked' OR credential_version > 0),
    CHECK (revocation_state = 'pending' OR revocation_next_at IS NULL)
);
-- ListConnections pages newest first.
CREATE INDEX connections_list_idx ON connections (tenant_id, created_at DESC, id DESC);
CREATE UNIQUE INDEX connections_idempotency_idx ON connections (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- Offboarding finds a user's connections; the revocation retrier finds pending ones.
CREATE INDEX connections_owner_idx ON connections (tenant_id, owner_user_id) WHERE owner_user_id IS NOT NULL;
CREATE INDEX connections_revocation_idx ON connections (revocation_next_at) WHERE revocation_state = 'pending';

-- Who and what a connection is never changes after creation: an UPDATE cannot move a
-- connection to another owner, scope or tenant (RLS would catch the tenant; this catches the
-- rest, including an admin's transaction, which may see every user-level row).
-- +goose StatementBegin
CREATE FUNCTION connections_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.tenant_id <> OLD.tenant_id OR NEW.id <> OLD.id OR NEW.integration <> OLD.integration
       OR NEW.auth_type <> OLD.auth_type OR NEW.scope <> OLD.scope
       OR NEW.owner_user_id IS DISTINCT FROM OLD.owner_user_id OR NEW.creator <> OLD.creator
       OR NEW.created_at <> OLD.created_at THEN
        RAISE EXCEPTION 'connection identity columns are immutable' USING ERRCODE = 'check_violation';
    END IF;
    -- Revocation is final.
    IF OLD.status = 'revoked' AND NEW.status <> 'revoked' THEN
        RAISE EXCEPTION 'a revoked connection stays revoked' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd
CREATE TRIGGER connections_immutable BEFORE UPDATE ON connections
    FOR EACH ROW EXECUTE FUNCTION connections_immutable();

ALTER TABLE connections ENABLE ROW LEVEL SECURITY;
ALTER TABLE connections FORCE ROW LEVEL SECURITY;
CREATE POLICY conn_select ON connections FOR SELECT
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid
           AND connection_visible(scope, owner_user_id));
-- Nobody creates a user-level connection for someone else, admins included.
CREATE POLICY conn_insert ON connections FOR INSERT
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid
                AND (scope = 'org' OR owner_user_id = nullif(current_setting('app.user_id', true), '')::uuid));
CREATE POLICY conn_update ON connections FOR UPDATE
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid
           AND connection_visible(scope, owner_user_id))
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid
                AND connection_visible(scope, owner_user_id));

-- A tenant's settings per integration. Absent row = catalog defaults, enabled.
CREATE TABLE integration_settings (
    tenant_id          uuid        NOT NULL,
    integration        text        NOT NULL CHECK (integration ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    enabled            boolean     NOT NULL DEFAULT true,
    -- The tenant's own OAuth app: the client id here, the secret in the vault-broker under
    -- oauth_secret_id (a random UUID, the broker's credential id).
    oauth_client_id    text        CHECK (char_length(oauth_client_id) BETWEEN 1 AND 256),
    oauth_secret_id    uuid,
    allowed_scopes     text[]      NOT NULL DEFAULT '{}' CHECK (cardinality(allowed_scopes) <= 100),
    -- NULL: the catalog's default scope.
    connection_scope   text        CHECK (connection_scope IN ('org', 'user')),
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, integration),
    CHECK ((oauth_client_id IS NULL) = (oauth_secret_id IS NULL))
);
ALTER TABLE integration_settings ENABLE ROW LEVEL SECURITY;
ALTER TABLE integration_settings FORCE ROW LEVEL SECURITY;
CREATE POLICY settings_select ON integration_settings FOR SELECT
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
CREATE POLICY settings_insert ON integration_settings FOR INSERT
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
CREATE POLICY settings_update ON integration_settings FOR UPDATE
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);

-- Pending OAuth2 authorizations. The state handed to the browser is "<tenant>.<id>.<secret>":
-- the tenant scopes the lookup (no query searches states across tenants), only SHA-256 of the
-- secret is kept, and a row is consumed (DELETE … RETURNING) by the one callback that presents
-- it before it expires. The PKCE verifier is a secret: it is kept encrypted with the tenant's
-- own transit key (vault-broker Encrypt), so this table alone cannot complete a flow.
CREATE TABLE oauth_states (
    tenant_id            uuid        NOT NULL,
    id                   uuid        NOT NULL,
    secret_hash          bytea       NOT NULL CHECK (octet_length(secret_hash) = 32),
    -- Who started it: the principal (creator of the connection) and, for users, the user the
    -- callback acts for.
    principal            text        NOT NULL CHECK (principal ~ '^(user|sa|svc):[A-Za-z0-9_.-]{1,64}$'),
    user_id              uuid,
    integration          text        NOT NULL CHECK (integration ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    scope                text        NOT NULL CHECK (scope IN ('org', 'user')),
    -- Re-authorize this connection in place; NULL creates a new one.
    connection_id        uuid,
    requested_scopes     text[]      NOT NULL DEFAULT '{}',
    fields               jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(fields) = 'object'),
    tags                 text[]      NOT NULL DEFAULT '{}',
    return_url           text        NOT NULL DEFAULT '' CHECK (char_length(return_url) <= 2048),
    -- Whose OAuth app the flow uses: the tenant's client id, or NULL for the platform's.
    oauth_client_id      text,
    verifier_ciphertext  text        NOT NULL CHECK (verifier_ciphertext <> ''),
    created_at           timestamptz NOT NULL DEFAULT now(),
    expires_at           timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    CHECK (expires_at > created_at AND expires_at <= created_at + interval '1 hour'),
    CHECK (scope = 'org' OR user_id IS NOT NULL)
);
CREATE INDEX oauth_states_expires_idx ON oauth_states (tenant_id, expires_at);
ALTER TABLE oauth_states ENABLE ROW LEVEL SECURITY;
ALTER TABLE oauth_states FORCE ROW LEVEL SECURITY;
CREATE POLICY states_select ON oauth_states FOR SELECT
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
CREATE POLICY states_insert ON oauth_states FOR INSERT
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
CREATE POLICY states_delete ON oauth_states FOR DELETE
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);

-- The transactional outbox: events are inserted in the same transaction as the change they
-- announce. The service may only append (no UPDATE or DELETE policy); the relay that publishes
-- and marks rows comes with the services that consume them. Payloads never hold a secret.
CREATE TABLE outbox (
    tenant_id     uuid        NOT NULL,
    id            uuid        NOT NULL DEFAULT gen_random_uuid(),
    -- The order events were written in (a relay publishes in this order).
    seq           bigint      GENERATED ALWAYS AS IDENTITY,
    event_type    text        NOT NULL CHECK (event_type IN (
                                  'connection.created', 'connection.refreshed',
                                  'connection.refresh_failed', 'connection.recovered',
                                  'connection.revoked', 'connection.deleted',
                                  'connection.disabled', 'connection.enabled',
                                  'connection.reauthorized')),
    connection_id uuid        NOT NULL,
    payload       jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(payload) = 'object'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX outbox_unpublished_idx ON outbox (seq) WHERE published_at IS NULL;
CREATE INDEX outbox_connection_idx ON outbox (tenant_id, connection_id, seq);
ALTER TABLE outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE outbox FORCE ROW LEVEL SECURITY;
CREATE POLICY outbox_select ON outbox FOR SELECT
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
CREATE POLICY outbox_insert ON outbox FOR INSERT
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);

-- +goose Down
DROP TABLE outbox;
DROP TABLE oauth_states;
DROP TABLE integration_settings;
DROP TABLE connections;
DROP FUNCTION connections_immutable();
DROP FUNCTION connection_visible(text, uuid);
