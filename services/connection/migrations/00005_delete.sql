-- DeleteConnection removes a connection's row for good, and only a revoked one whose
-- revocation is final (confirmed or not_supported): the policy itself refuses to delete a
-- usable connection or one whose tokens the provider may still honour, whatever the service's
-- code does. The same visibility as UPDATE: the tenant's org-level connections, the caller's
-- own, and — with the transaction-bound admin opt-in — other users' (connection_visible). The
-- outbox keeps the connection's events, connection.deleted last (no foreign key).

-- +goose Up
CREATE POLICY conn_delete ON connections FOR DELETE
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid
           AND connection_visible(scope, owner_user_id)
           AND status = 'revoked'
           AND revocation_state IN ('confirmed', 'not_supported'));

-- +goose Down
DROP POLICY conn_delete ON connections;
