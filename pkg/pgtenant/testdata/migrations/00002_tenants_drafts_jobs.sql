-- +goose Up
-- A tenant registry platform operators may read across tenants (read-only policy).
CREATE TABLE tenants (
    tenant_id uuid PRIMARY KEY,
    name      text NOT NULL
);
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants
    USING      (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
CREATE POLICY platform_read ON tenants FOR SELECT
    USING (current_setting('app.platform', true) = 'on');

-- Per-user rows inside a tenant.
CREATE TABLE drafts (
    tenant_id uuid NOT NULL,
    user_id   uuid NOT NULL,
    id        uuid NOT NULL DEFAULT gen_random_uuid(),
    body      text NOT NULL,
    UNIQUE (tenant_id, id)
);
ALTER TABLE drafts ENABLE ROW LEVEL SECURITY;
ALTER TABLE drafts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_user_isolation ON drafts
    USING      (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid
                AND user_id = nullif(current_setting('app.user_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid
                AND user_id = nullif(current_setting('app.user_id', true), '')::uuid);

-- A global (not tenant-scoped) table with a sequence: reached through InGlobalTx.
CREATE TABLE jobs (
    id      bigserial PRIMARY KEY,
    payload text NOT NULL
);

-- +goose Down
DROP TABLE jobs;
DROP TABLE drafts;
DROP TABLE tenants;
