-- +goose Up
-- A tenant table in the pattern every service follows (see the package doc).
CREATE TABLE notes (
    tenant_id uuid NOT NULL,
    id        uuid NOT NULL DEFAULT gen_random_uuid(),
    body      text NOT NULL,
    UNIQUE (tenant_id, id)
);
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
ALTER TABLE notes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON notes
    USING      (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);

-- +goose Down
DROP TABLE notes;
