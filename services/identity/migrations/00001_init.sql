-- Identity's schema: tenants, their users and memberships, service accounts, API keys, the
-- outbox, and CreateTenant's idempotency records.
--
-- Isolation rules (pkg/pgtenant doc): every tenant-owned table has tenant_id, a unique
-- (tenant_id, id) that foreign keys reference so a row can only point inside its own tenant,
-- ENABLE + FORCE ROW LEVEL SECURITY, and policies on app.tenant_id. pgtenant.Migrate grants the
-- app role SELECT/INSERT/UPDATE/DELETE on every table; the policies below are per command, so a
-- command without a policy matches no row (e.g. nobody deletes a tenant or an API key row, and
-- the outbox is append-only for the service).

-- +goose Up

CREATE TABLE tenants (
    id             uuid        PRIMARY KEY,
    name           text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    status         text        NOT NULL DEFAULT 'active'
                               CHECK (status IN ('active', 'suspended', 'deleted')),
    suspend_reason text        NOT NULL DEFAULT '' CHECK (char_length(suspend_reason) <= 500),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    -- A reason only means something while suspended.
    CHECK (status = 'suspended' OR suspend_reason = '')
);
-- ListTenants pages by (created_at, id).
CREATE INDEX tenants_created_idx ON tenants (created_at, id);

ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
-- The tenants table is keyed by id, not tenant_id: a transaction sees (and writes) only the
-- tenant it is scoped to.
CREATE POLICY tenant_select ON tenants FOR SELECT
    USING (id = nullif(current_setting('app.tenant_id', true), '')::uuid);
CREATE POLICY tenant_insert ON tenants FOR INSERT
    WITH CHECK (id = nullif(current_setting('app.tenant_id', true), '')::uuid);
CREATE POLICY tenant_update ON tenants FOR UPDATE
    USING (id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (id = nullif(current_setting('app.tenant_id', true), '')::uuid);
-- Platform operators list every tenant (ListTenants through pgtenant.InPlatformTx): read only.
CREATE POLICY platform_select ON tenants FOR SELECT
    USING (current_setting('app.platform', true) = 'on');

-- Users belong to one tenant: the same person in two tenants is two users. No table of people
-- spans tenants, so no query can find out that an e-mail address exists in another tenant.
CREATE TABLE users (
    tenant_id    uuid        NOT NULL REFERENCES tenants (id),
    id           uuid        NOT NULL,
    email        text        NOT NULL CHECK (char_length(email) BETWEEN 3 AND 254),
    display_name text        NOT NULL DEFAULT '' CHECK (char_length(display_name) <= 100),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX users_email_idx ON users (tenant_id, lower(email));

ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_select ON users FOR SELECT
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
CREATE POLICY tenant_insert ON users FOR INSERT
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
CREATE POLICY tenant_update ON users FOR UPDATE
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);

-- A membership is a user's current role in its tenant; removing a member deletes the row (the
-- user row stays, so its API keys keep pointing at something and re-adding the address
-- restores the same user id, with its old keys still revoked).
CREATE TABLE memberships (
    tenant_id  uuid        NOT NULL,
    user_id    uuid        NOT NULL,
    role       text        NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);
-- ListMembers pages oldest first.
CREATE INDEX memberships_created_idx ON memberships (tenant_id, created_at, user_id);

ALTER TABLE memberships ENABLE ROW LEVEL SECURITY;
ALTER TABLE memberships FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_select ON memberships FOR SELECT
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
CREATE POLICY tenant_insert ON memberships FOR INSERT
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
CREATE POLICY tenant_update ON memberships FOR UPDATE
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
CREATE POLICY tenant_delete ON memberships FOR DELETE
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);

-- Service accounts are soft-deleted: their API keys keep their history, and a deleted account
-- can never authenticate again.
CREATE TABLE service_accounts (
    tenant_id   uuid        NOT NULL REFERENCES tenants (id),
    id          uuid        NOT NULL,
    name        text        NOT NULL CHECK (name ~ '^[a-z][a-z0-9-]{0,62}$'),
    description text        NOT NULL DEFAULT '' CHECK (char_length(description) <= 500),
    scopes      text[]      NOT NULL CHECK (cardinality(scopes) BETWEEN 1 AND 50),
    created_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz,
    PRIMARY KEY (tenant_id, id)
);
-- Names are unique among live accounts; a deleted account's name can be reused.
CREATE UNIQUE INDEX service_accounts_name_idx ON service_accounts (tenant_id, name)
    WHERE deleted_at IS NULL;
CREATE INDEX service_accounts_created_idx ON service_accounts (tenant_id, created_at, id);

ALTER TABLE service_accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE service_accounts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_select ON service_accounts FOR SELECT
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
CREATE POLICY tenant_insert ON service_accounts FOR INSERT
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
CREATE POLICY tenant_update ON service_accounts FOR UPDATE
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);

-- API keys: only a SHA-256 of the whole key is stored, with the key's public lookup id. The key
-- string itself names the tenant (bhk_<tenant>_<lookup>_<secret>), so IssueToken finds the row
-- inside that tenant's scope and never needs an unscoped query.
CREATE TABLE api_keys (
    tenant_id          uuid        NOT NULL REFERENCES tenants (id),
    id                 uuid        NOT NULL,
    lookup_id          text        NOT NULL CHECK (lookup_id ~ '^[0-9a-f]{16}$'),
    secret_hash        bytea       NOT NULL CHECK (octet_length(secret_hash) = 32),
    user_id            uuid,
    service_account_id uuid,
    created_at         timestamptz NOT NULL DEFAULT now(),
    expires_at         timestamptz,
    revoked_at         timestamptz,
    last_used_at       timestamptz,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, lookup_id),
    -- Exactly one owner.
    CHECK ((user_id IS NULL) <> (service_account_id IS NULL)),
    CHECK (expires_at IS NULL OR expires_at > created_at),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id),
    FOREIGN KEY (tenant_id, service_account_id) REFERENCES service_accounts (tenant_id, id)
);
CREATE INDEX api_keys_created_idx ON api_keys (tenant_id, created_at, id);
CREATE INDEX api_keys_user_idx ON api_keys (tenant_id, user_id) WHERE user_id IS NOT NULL;
CREATE INDEX api_keys_sa_idx ON api_keys (tenant_id, service_account_id)
    WHERE service_account_id IS NOT NULL;

ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_select ON api_keys FOR SELECT
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
CREATE POLICY tenant_insert ON api_keys FOR INSERT
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
CREATE POLICY tenant_update ON api_keys FOR UPDATE
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);

-- The transactional outbox: events are inserted in the same transaction as the change they
-- announce. The service may only append (no UPDATE or DELETE policy); a relay that publishes
-- and marks rows comes with the services that consume them.
CREATE TABLE outbox (
    tenant_id    uuid        NOT NULL REFERENCES tenants (id),
    id           uuid        NOT NULL,
    event_type   text        NOT NULL CHECK (event_type IN (
                                 'tenant.created', 'tenant.suspended', 'tenant.resumed',
                                 'tenant.deleted', 'member.removed')),
    payload      jsonb       NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX outbox_unpublished_idx ON outbox (created_at) WHERE published_at IS NULL;

ALTER TABLE outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE outbox FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_select ON outbox FOR SELECT
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
CREATE POLICY tenant_insert ON outbox FOR INSERT
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);

-- CreateTenant's idempotency records. Global on purpose (no RLS): the caller is not
-- authenticated yet, so there is no tenant to scope the lookup by; the record names the tenant
-- a replay answers with. That column is result_tenant_id rather than tenant_id because
-- pgtenant.VerifyIsolation (rightly) demands RLS on every table with a tenant_id column, and
-- this row is not owned by the tenant it points to. key is the SHA-256 (hex) of the client's
-- key, so a reader of this table cannot replay requests with it.
CREATE TABLE idempotency_keys (
    key              text        PRIMARY KEY CHECK (key ~ '^[0-9a-f]{64}$'),
    request_hash     bytea       NOT NULL CHECK (octet_length(request_hash) = 32),
    result_tenant_id uuid        NOT NULL REFERENCES tenants (id),
    owner_user_id    uuid        NOT NULL,
    api_key_id       uuid        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    CHECK (expires_at > created_at)
);
CREATE INDEX idempotency_keys_expires_idx ON idempotency_keys (expires_at);

-- +goose Down
DROP TABLE idempotency_keys;
DROP TABLE outbox;
DROP TABLE api_keys;
DROP TABLE service_accounts;
DROP TABLE memberships;
DROP TABLE users;
DROP TABLE tenants;
