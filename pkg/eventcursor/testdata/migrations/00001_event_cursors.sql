-- Where each consumer of another service's events stands (internal/offboarding reads
-- identity's outbox through EventService.ListEvents). Global, not tenant-scoped: one cursor
-- walks every tenant's events, so there is no tenant_id and the service reads it through
-- pgtenant.DB.InGlobalTx. Only one replica consumes at a time (a transaction-level advisory
-- lock held while it works, see internal/offboarding), and the cursor moves in that same
-- transaction, after the events before it were handled: delivery is at least once.

-- +goose Up

CREATE TABLE event_cursors (
    consumer   text        PRIMARY KEY CHECK (consumer ~ '^[a-z][a-z0-9._-]{0,62}$'),
    cursor     text        NOT NULL CHECK (char_length(cursor) <= 100),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE event_cursors;
