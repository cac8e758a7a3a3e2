-- The outbox becomes readable by Bulkhead services through EventService.ListEvents.
--
-- Ordering. A sequence alone is not a safe cursor: ids are taken at INSERT, transactions commit
-- in another order, so a reader could pass id 6 while id 5's transaction is still open and
-- never see 5. Each row therefore also records its writer's transaction id (xid8), and the
-- reader orders by (xid, seq) and only returns rows whose transaction is older than the oldest
-- one still running (pg_snapshot_xmin of its snapshot): every such transaction has finished,
-- so no row can ever appear behind a cursor already handed out. The price: a long-running
-- identity transaction delays events (not loses them).
--
-- Cross-tenant read. The consumers (the connection service's offboarding) act on events of
-- every tenant, so ListEvents reads through pgtenant.InPlatformTx: the SELECT policy below
-- admits app.platform = 'on', which only that explicit path sets. It is read-only: the
-- outbox keeps no UPDATE or DELETE policy, and inserts still need the tenant's scope.

-- +goose Up

ALTER TABLE outbox ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY;
ALTER TABLE outbox ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE UNIQUE INDEX outbox_order_idx ON outbox (xid, seq);

CREATE POLICY platform_select ON outbox FOR SELECT
    USING (current_setting('app.platform', true) = 'on');

-- +goose Down
DROP POLICY platform_select ON outbox;
DROP INDEX outbox_order_idx;
ALTER TABLE outbox DROP COLUMN xid;
ALTER TABLE outbox DROP COLUMN seq;
