-- Offboarding (TenantDataService.PurgeTenant, internal/purge) hard-deletes a DELETING tenant's
-- records in bounded batches. records had no DELETE policy (a sync's deletions are soft, so the
-- feed can report them), and a command without a policy matches no row under FORCE RLS, so the
-- purge could not remove them. This policy lets the app role delete only rows of the tenant its
-- transaction is scoped to (app.tenant_id): never across tenants, never without a tenant. syncs
-- already has tenant_delete, and webhook_endpoints and webhook_deliveries have tenant_all.

-- +goose Up
CREATE POLICY tenant_delete ON records FOR DELETE
    USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);

-- +goose Down
DROP POLICY tenant_delete ON records;
