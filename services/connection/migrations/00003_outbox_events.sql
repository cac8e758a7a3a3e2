-- The outbox becomes readable by Bulkhead services through EventService.ListEvents (the sync
-- service follows connection.* events). Same design as identity's outbox (identity's
-- migrations/00003_outbox_events.sql):
--
-- Ordering. seq alone is not a safe cursor: values are taken at INSERT, transactions commit in
-- another order, so a reader could pass seq 6 while seq 5's transaction is still open and
-- never see 5. Each row therefore also records its writer's transaction id (xid8); the reader
-- orders by (xid, seq) and only returns rows whose transaction is older than the oldest one
-- still running (pg_snapshot_xmin of its snapshot): every such transaction has finished, so no
-- row can appear behind a cursor already handed out. The price: a long-running connection
-- transaction (a refresh holding its row lock while the provider answers) delays events, never
-- loses them.
--
-- Cross-tenant read. ListEvents reads through pgtenant.InPlatformTx: the SELECT policy below
-- admits app.platform = 'on', which only that explicit path sets. It is read-only: the outbox
-- keeps no UPDATE or DELETE policy, and inserts still need the tenant's scope. Rows written
-- before this migration all get the migration's own xid, which is older than any later one.

-- +goose Up

ALTER TABLE outbox ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE UNIQUE INDEX outbox_order_idx ON outbox (xid, seq);

CREATE POLICY outbox_platform_select ON outbox FOR SELECT
    USING (current_setting('app.platform', true) = 'on');

-- +goose Down
DROP POLICY outbox_platform_select ON outbox;
DROP INDEX outbox_order_idx;
ALTER TABLE outbox DROP COLUMN xid;
