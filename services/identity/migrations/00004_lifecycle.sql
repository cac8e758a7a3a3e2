-- The tenant lifecycle saga (services/identity/internal/lifecycle): each tenant row carries the
-- step of its cross-service lifecycle still to be done, retried with backoff until it succeeds.
--
--   CreateTenant → vault.provision (the vault-broker creates the tenant's Vault layout)
--   DeleteTenant → status 'deleting' → connections.offboard (the connection service revokes
--                  every connection at its provider) → vault.deprovision → status 'deleted'
--
-- The state lives on the tenant row rather than in a table of its own so that a step can only
-- be changed under the same row lock as the status: DeleteTenant replacing a pending
-- vault.provision and the worker recording that provision's success cannot both win.
--
-- Workers find due tenants through the existing platform_select policy (read-only) and claim
-- and update each one inside that tenant's own scope, like every other write.

-- +goose Up

ALTER TABLE tenants DROP CONSTRAINT tenants_status_check;
ALTER TABLE tenants ADD CONSTRAINT tenants_status_check
    CHECK (status IN ('active', 'suspended', 'deleting', 'deleted'));

ALTER TABLE tenants
    ADD COLUMN lifecycle_step text
        CHECK (lifecycle_step IN ('vault.provision', 'connections.offboard', 'vault.deprovision')),
    ADD COLUMN lifecycle_attempts integer NOT NULL DEFAULT 0 CHECK (lifecycle_attempts >= 0),
    ADD COLUMN lifecycle_error text NOT NULL DEFAULT '' CHECK (char_length(lifecycle_error) <= 500),
    ADD COLUMN lifecycle_next_at timestamptz,
    ADD COLUMN lifecycle_done text[] NOT NULL DEFAULT '{}',
    ADD COLUMN delete_requested_at timestamptz,
    -- A step is always due at some time; a deleting tenant always has a step left.
    ADD CONSTRAINT tenants_lifecycle_due_check CHECK ((lifecycle_step IS NULL) = (lifecycle_next_at IS NULL)),
    ADD CONSTRAINT tenants_deleting_step_check CHECK (status <> 'deleting' OR lifecycle_step IS NOT NULL),
    ADD CONSTRAINT tenants_deleted_done_check CHECK (status <> 'deleted' OR lifecycle_step IS NULL);

-- Tenants from before the saga: provision them (ProvisionTenant is idempotent), and finish
-- offboarding those already marked deleted, which then meant "offboarding started".
UPDATE tenants SET lifecycle_step = 'vault.provision', lifecycle_next_at = now()
    WHERE status IN ('active', 'suspended');
UPDATE tenants SET status = 'deleting', lifecycle_step = 'connections.offboard',
    lifecycle_next_at = now(), delete_requested_at = updated_at
    WHERE status = 'deleted';

CREATE INDEX tenants_lifecycle_due_idx ON tenants (lifecycle_next_at) WHERE lifecycle_step IS NOT NULL;

ALTER TABLE outbox DROP CONSTRAINT outbox_event_type_check;
ALTER TABLE outbox ADD CONSTRAINT outbox_event_type_check CHECK (event_type IN (
    'tenant.created', 'tenant.suspended', 'tenant.resumed', 'tenant.deleting',
    'tenant.deleted', 'member.removed'));

-- +goose Down
ALTER TABLE outbox DROP CONSTRAINT outbox_event_type_check;
ALTER TABLE outbox ADD CONSTRAINT outbox_event_type_check CHECK (event_type IN (
    'tenant.created', 'tenant.suspended', 'tenant.resumed', 'tenant.deleted', 'member.removed'));
DROP INDEX tenants_lifecycle_due_idx;
UPDATE tenants SET status = 'deleted' WHERE status = 'deleting';
ALTER TABLE tenants
    DROP CONSTRAINT tenants_deleted_done_check,
    DROP CONSTRAINT tenants_deleting_step_check,
    DROP CONSTRAINT tenants_lifecycle_due_check,
    DROP COLUMN delete_requested_at,
    DROP COLUMN lifecycle_done,
    DROP COLUMN lifecycle_next_at,
    DROP COLUMN lifecycle_error,
    DROP COLUMN lifecycle_attempts,
    DROP COLUMN lifecycle_step;
ALTER TABLE tenants DROP CONSTRAINT tenants_status_check;
ALTER TABLE tenants ADD CONSTRAINT tenants_status_check
    CHECK (status IN ('active', 'suspended', 'deleted'));
