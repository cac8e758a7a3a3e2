-- The SELECT policies of connections read their session settings once per statement instead
-- of once per row: each current_setting(…) is wrapped in a scalar sub-SELECT, which PostgreSQL
-- runs once as an InitPlan and then compares as a parameter. The rules are exactly those of
-- 00001 and 00004 (same settings, same comparisons, NULL when unset, the admin opt-in still
-- bound to the transaction's now()); only when they are evaluated changes. Measured with
-- BenchmarkListConnections: a page of 50 went from ≈ 1.6–1.9× to ≈ 1.2× the same query without
-- RLS. connection_visible is spelled out here because an SQL function holding a sub-SELECT is
-- no longer inlined, and a per-row function call would cost more than it saves; the UPDATE and
-- DELETE policies keep it (they touch one row by primary key).

-- +goose Up
DROP POLICY conn_select ON connections;
CREATE POLICY conn_select ON connections FOR SELECT
    USING (tenant_id = (SELECT nullif(current_setting('app.tenant_id', true), '')::uuid)
           AND (scope = 'org'
                OR owner_user_id = (SELECT nullif(current_setting('app.user_id', true), '')::uuid)
                OR (SELECT coalesce(current_setting('app.connections_admin', true), '') = now()::text)));
DROP POLICY conn_platform_select ON connections;
CREATE POLICY conn_platform_select ON connections FOR SELECT
    USING ((SELECT current_setting('app.platform', true) = 'on'));

-- +goose Down
DROP POLICY conn_platform_select ON connections;
CREATE POLICY conn_platform_select ON connections FOR SELECT
    USING (current_setting('app.platform', true) = 'on');
DROP POLICY conn_select ON connections;
CREATE POLICY conn_select ON connections FOR SELECT
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid
           AND connection_visible(scope, owner_user_id));
