-- The sync service's schema: syncs (one per connection and model, with the checkpoint of the
-- run in progress), records (the synced copy, with a content hash and a change sequence),
-- webhook endpoints and the webhook delivery outbox. River's own tables are created by
-- rivermigrate (see migrations.Apply), not here.
--
-- Isolation rules (pkg/pgtenant doc): every table has tenant_id, ENABLE + FORCE ROW LEVEL
-- SECURITY and per-command policies on app.tenant_id; a command without a policy matches no row.

-- +goose Up

CREATE TABLE syncs (
    tenant_id        uuid        NOT NULL,
    id               uuid        NOT NULL DEFAULT gen_random_uuid(),
    connection_id    uuid        NOT NULL,
    integration      text        NOT NULL CHECK (integration ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    model            text        NOT NULL CHECK (model ~ '^[a-z][a-z0-9_]{0,62}$'),
    mode             text        NOT NULL CHECK (mode IN ('full', 'incremental')),
    frequency_secs   integer     NOT NULL CHECK (frequency_secs > 0),
    state            text        NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'paused')),
    -- The incremental checkpoint: the newest provider updated-at committed by a successful run.
    checkpoint       timestamptz,
    -- The latest run (in progress when run_status = 'running'). A run's position is committed
    -- with each page's records, so a run resumes exactly after its last committed page.
    run_number       bigint      NOT NULL DEFAULT 0 CHECK (run_number >= 0),
    run_status       text        NOT NULL DEFAULT 'none'
                                 CHECK (run_status IN ('none', 'running', 'succeeded', 'failed')),
    run_full         boolean     NOT NULL DEFAULT false,
    -- The incremental lower bound, fixed when the run starts (NULL: fetch everything).
    run_since        timestamptz,
    -- The provider's position of the next page (a cursor or a next-page URL); NULL: first page.
    run_page_cursor  text,
    run_high_water   timestamptz,
    run_added        bigint      NOT NULL DEFAULT 0,
    run_updated      bigint      NOT NULL DEFAULT 0,
    run_deleted      bigint      NOT NULL DEFAULT 0,
    run_pages        bigint      NOT NULL DEFAULT 0,
    run_started_at   timestamptz,
    run_finished_at  timestamptz,
    -- The last finished run, copied from run_* when it finishes.
    last_number      bigint      NOT NULL DEFAULT 0,
    last_status      text        NOT NULL DEFAULT 'none'
                                 CHECK (last_status IN ('none', 'succeeded', 'failed')),
    last_full        boolean     NOT NULL DEFAULT false,
    last_added       bigint      NOT NULL DEFAULT 0,
    last_updated     bigint      NOT NULL DEFAULT 0,
    last_deleted     bigint      NOT NULL DEFAULT 0,
    last_pages       bigint      NOT NULL DEFAULT 0,
    last_started_at  timestamptz,
    last_finished_at timestamptz,
    last_error       text        NOT NULL DEFAULT '' CHECK (char_length(last_error) <= 1000),
    -- Set by TriggerSync(full_resync); consumed when the next run starts.
    full_resync      boolean     NOT NULL DEFAULT false,
    next_run_at      timestamptz,
    -- The River job that runs the sync next (or now), for cancellation.
    job_id           bigint,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, connection_id, model)
);
-- The scheduler's repair pass looks for active syncs that are due.
CREATE INDEX syncs_due_idx ON syncs (next_run_at) WHERE state = 'active';

ALTER TABLE syncs ENABLE ROW LEVEL SECURITY;
ALTER TABLE syncs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_select ON syncs FOR SELECT
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
CREATE POLICY tenant_insert ON syncs FOR INSERT
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
CREATE POLICY tenant_update ON syncs FOR UPDATE
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
CREATE POLICY tenant_delete ON syncs FOR DELETE
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
-- The scheduler's repair pass (a River periodic job acting for no tenant) finds due syncs of
-- every tenant through pgtenant.InPlatformTx: read only; it writes through tenant transactions.
CREATE POLICY platform_select ON syncs FOR SELECT
    USING (current_setting('app.platform', true) = 'on');

-- The change sequence of records. A sequence alone is not a stable feed (transactions commit
-- out of order); writers also hold a per-tenant transaction lock while they draw from it and
-- until they commit, so within a tenant, values become visible in increasing order.
CREATE SEQUENCE record_seq AS bigint;

CREATE TABLE records (
    tenant_id           uuid        NOT NULL,
    connection_id       uuid        NOT NULL,
    model               text        NOT NULL,
    external_id         text        NOT NULL CHECK (char_length(external_id) BETWEEN 1 AND 512),
    -- SHA-256 of payload's canonical JSON: an unchanged record is not rewritten.
    content_hash        bytea       NOT NULL CHECK (octet_length(content_hash) = 32),
    payload             jsonb       NOT NULL,
    provider_updated_at timestamptz,
    -- The latest change: its kind, its position in the tenant's feed and its commit time.
    action              text        NOT NULL CHECK (action IN ('added', 'updated', 'deleted')),
    seq                 bigint      NOT NULL,
    changed_at          timestamptz NOT NULL DEFAULT now(),
    deleted_at          timestamptz,
    -- The run that last saw the record; a full run that finishes deletes what it did not see.
    last_seen_run       bigint      NOT NULL,
    first_seen_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, connection_id, model, external_id),
    CHECK ((action = 'deleted') = (deleted_at IS NOT NULL))
);
-- The change feed of one model, and of the whole tenant (WatchChanges without filters).
CREATE INDEX records_feed_idx ON records (tenant_id, connection_id, model, seq);
CREATE INDEX records_tenant_feed_idx ON records (tenant_id, seq);

ALTER TABLE records ENABLE ROW LEVEL SECURITY;
ALTER TABLE records FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_select ON records FOR SELECT
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
CREATE POLICY tenant_insert ON records FOR INSERT
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
CREATE POLICY tenant_update ON records FOR UPDATE
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
-- No DELETE policy: deletions are soft (deleted_at), so the feed can report them.

CREATE TABLE webhook_endpoints (
    tenant_id   uuid        NOT NULL,
    id          uuid        NOT NULL DEFAULT gen_random_uuid(),
    url         text        NOT NULL CHECK (url ~ '^https?://'),
    events      text[]      NOT NULL CHECK (cardinality(events) > 0),
    description text        NOT NULL DEFAULT '' CHECK (char_length(description) <= 200),
    -- The HMAC-SHA256 key deliveries are signed with.
    secret      bytea       NOT NULL CHECK (octet_length(secret) >= 32),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX webhook_endpoints_created_idx ON webhook_endpoints (tenant_id, created_at, id);

ALTER TABLE webhook_endpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_endpoints FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_all ON webhook_endpoints
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);

-- The outbox: one row per event and endpoint, written in the transaction that caused the event.
CREATE TABLE webhook_deliveries (
    tenant_id       uuid        NOT NULL,
    id              uuid        NOT NULL DEFAULT gen_random_uuid(),
    endpoint_id     uuid        NOT NULL,
    event_id        uuid        NOT NULL,
    event           text        NOT NULL,
    body            jsonb       NOT NULL,
    state           text        NOT NULL DEFAULT 'pending'
                                CHECK (state IN ('pending', 'delivered', 'dead_letter')),
    attempts        integer     NOT NULL DEFAULT 0,
    last_status     integer     NOT NULL DEFAULT 0,
    last_error      text        NOT NULL DEFAULT '' CHECK (char_length(last_error) <= 1000),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_attempt_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, endpoint_id, event_id),
    FOREIGN KEY (tenant_id, endpoint_id) REFERENCES webhook_endpoints (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX webhook_deliveries_list_idx ON webhook_deliveries (tenant_id, created_at DESC, id);

ALTER TABLE webhook_deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_deliveries FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_all ON webhook_deliveries
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
