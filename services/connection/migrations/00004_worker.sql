-- The background worker (internal/worker) finds, across tenants, the connections it must look
-- at: pending provider revocations whose next attempt is due, and active connections whose
-- token is about to expire, whose no-expiry credential is due for its test, or whose refresh
-- token has been idle for the check interval. It reads only ids through pgtenant.InPlatformTx;
-- the SELECT policy below admits app.platform = 'on', which only that explicit path sets. It is
-- read-only: there is no platform UPDATE policy, so a platform transaction can neither change
-- nor lock (SELECT … FOR UPDATE) a row. The work itself happens per tenant, in transactions
-- scoped to that tenant, with the tenant's background token at the vault-broker.

-- +goose Up

CREATE POLICY conn_platform_select ON connections FOR SELECT
    USING (current_setting('app.platform', true) = 'on');

-- Active connections by expiry and by check time (the worker's two other questions).
CREATE INDEX connections_access_expiry_idx ON connections (access_expires_at) WHERE status = 'active';
CREATE INDEX connections_next_check_idx ON connections (next_check_at) WHERE status = 'active';

-- +goose Down
DROP INDEX connections_next_check_idx;
DROP INDEX connections_access_expiry_idx;
DROP POLICY conn_platform_select ON connections;
