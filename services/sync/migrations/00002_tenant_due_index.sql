-- The engine sets a sync job's River priority from how many of the tenant's syncs are due
-- (store.DueCount), so a tenant with thousands of due syncs queues behind tenants with a few.

-- +goose Up
CREATE INDEX syncs_tenant_due_idx ON syncs (tenant_id, next_run_at) WHERE state = 'active';

-- +goose Down
DROP INDEX syncs_tenant_due_idx;
