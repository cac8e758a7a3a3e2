-- A final revocation state "failed": revocation at the provider was given up. Before it, a
-- connection whose revocation could never succeed — its endpoint refused by the egress guard,
-- the provider refusing the request for good (RFC 7009 400 unsupported_token_type, 401
-- invalid_client), its credential gone — stayed pending forever, so it could never be deleted
-- either. Now the service gives up on such a revocation, on transient failures that outlast
-- the give-up period (measured from revoked_at), and on a tenant's remaining revocations once
-- its offboarding deadline passed; it deletes the credential then (it is useless, and must
-- not linger) and records why in revocation_failure_reason (secret-free: a status or an OAuth2
-- error code, never a token or a URL that could hold one).
--
-- revoked_at is when the connection was first revoked. Rows revoked before this migration get
-- the time of their connection.revoked event (their last update when the outbox has none).
-- Forced row-level security hides every row from the owner role too, so the backfill lifts
-- FORCE for its one statement: the ALTERs hold ACCESS EXCLUSIVE locks until the migration's
-- transaction commits, with FORCE back on, so no other session ever sees the table without it.
--
-- DeleteConnection may remove a failed connection: nothing is left to wait for.

-- +goose Up
ALTER TABLE connections DROP CONSTRAINT connections_revocation_state_check;
ALTER TABLE connections ADD CONSTRAINT connections_revocation_state_check
    CHECK (revocation_state IN ('', 'pending', 'confirmed', 'not_supported', 'failed'));
ALTER TABLE connections
    ADD COLUMN revocation_failure_reason text NOT NULL DEFAULT ''
        CONSTRAINT connections_revocation_failure_reason_length CHECK (char_length(revocation_failure_reason) <= 200),
    ADD COLUMN revoked_at timestamptz,
    -- A reason exactly when the revocation failed.
    ADD CONSTRAINT connections_revocation_failure_reason_check
        CHECK ((revocation_state = 'failed') = (revocation_failure_reason <> ''));

ALTER TABLE connections NO FORCE ROW LEVEL SECURITY;
ALTER TABLE outbox NO FORCE ROW LEVEL SECURITY;
UPDATE connections c SET revoked_at = coalesce(
        (SELECT min(o.created_at) FROM outbox o
         WHERE o.tenant_id = c.tenant_id AND o.connection_id = c.id AND o.event_type = 'connection.revoked'),
        c.updated_at)
    WHERE c.status = 'revoked';
ALTER TABLE outbox FORCE ROW LEVEL SECURITY;
ALTER TABLE connections FORCE ROW LEVEL SECURITY;
ALTER TABLE connections ADD CONSTRAINT connections_revoked_at_check
    CHECK ((status = 'revoked') = (revoked_at IS NOT NULL));

ALTER TABLE outbox DROP CONSTRAINT outbox_event_type_check;
ALTER TABLE outbox ADD CONSTRAINT outbox_event_type_check CHECK (event_type IN (
    'connection.created', 'connection.refreshed',
    'connection.refresh_failed', 'connection.recovered',
    'connection.revoked', 'connection.deleted',
    'connection.disabled', 'connection.enabled',
    'connection.reauthorized', 'connection.revocation_failed'));

DROP POLICY conn_delete ON connections;
CREATE POLICY conn_delete ON connections FOR DELETE
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid
           AND connection_visible(scope, owner_user_id)
           AND status = 'revoked'
           AND revocation_state IN ('confirmed', 'not_supported', 'failed'));

-- +goose Down
-- Fails while a connection's revocation is failed or an event is connection.revocation_failed:
-- the earlier schema has no way to say either.
DROP POLICY conn_delete ON connections;
CREATE POLICY conn_delete ON connections FOR DELETE
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid
           AND connection_visible(scope, owner_user_id)
           AND status = 'revoked'
           AND revocation_state IN ('confirmed', 'not_supported'));
ALTER TABLE outbox DROP CONSTRAINT outbox_event_type_check;
ALTER TABLE outbox ADD CONSTRAINT outbox_event_type_check CHECK (event_type IN (
    'connection.created', 'connection.refreshed',
    'connection.refresh_failed', 'connection.recovered',
    'connection.revoked', 'connection.deleted',
    'connection.disabled', 'connection.enabled',
    'connection.reauthorized'));
ALTER TABLE connections DROP CONSTRAINT connections_revoked_at_check;
ALTER TABLE connections DROP CONSTRAINT connections_revocation_failure_reason_check;
ALTER TABLE connections DROP COLUMN revoked_at;
ALTER TABLE connections DROP COLUMN revocation_failure_reason;
ALTER TABLE connections DROP CONSTRAINT connections_revocation_state_check;
ALTER TABLE connections ADD CONSTRAINT connections_revocation_state_check
    CHECK (revocation_state IN ('', 'pending', 'confirmed', 'not_supported'));
