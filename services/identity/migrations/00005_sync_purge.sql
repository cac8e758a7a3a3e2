-- The saga's sync.purge step (services/identity/internal/lifecycle): after a deleted tenant's
-- connections are revoked, the sync service deletes everything it holds for the tenant.

-- +goose Up
ALTER TABLE tenants DROP CONSTRAINT tenants_lifecycle_step_check;
ALTER TABLE tenants ADD CONSTRAINT tenants_lifecycle_step_check CHECK (lifecycle_step IN (
    'vault.provision', 'connections.offboard', 'sync.purge', 'vault.deprovision'));

-- +goose Down
UPDATE tenants SET lifecycle_step = 'vault.deprovision' WHERE lifecycle_step = 'sync.purge';
ALTER TABLE tenants DROP CONSTRAINT tenants_lifecycle_step_check;
ALTER TABLE tenants ADD CONSTRAINT tenants_lifecycle_step_check CHECK (lifecycle_step IN (
    'vault.provision', 'connections.offboard', 'vault.deprovision'));
