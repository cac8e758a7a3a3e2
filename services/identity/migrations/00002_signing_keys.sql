-- The keys identity signs tokens with, shared by every identity replica (package
-- internal/token). Global, not tenant-scoped: there is no tenant_id, and the service reads it
-- through pgtenant.DB.InGlobalTx.
--
-- The private key is stored only sealed (AES-256-GCM under the key-encryption key from
-- identity's configuration, with the kid as associated data), so a database dump alone cannot
-- mint tokens. The public key is stored in the clear for publication; the service publishes a
-- key only after opening its sealed private key and checking that it matches, so a row
-- inserted by someone without the KEK is never trusted.
--
-- pgtenant.Migrate grants the app role SELECT/INSERT/UPDATE/DELETE on every table. The
-- per-command policies below narrow that to what the key ring does: read, insert a new key,
-- retire the current one. There is no DELETE policy (under FORCE RLS, DELETE matches no row:
-- retired rows stay as a record of every key that ever signed), and the trigger keeps a key's
-- material and history immutable.

-- +goose Up

CREATE TABLE signing_keys (
    -- RFC 7638 thumbprint (SHA-256, base64url) of the public JWK.
    kid                text        PRIMARY KEY CHECK (kid ~ '^[A-Za-z0-9_-]{16,128}$'),
    alg                text        NOT NULL CHECK (alg = 'EdDSA'),
    public_key         bytea       NOT NULL CHECK (octet_length(public_key) = 32),
    sealed_private_key bytea       NOT NULL CHECK (octet_length(sealed_private_key) BETWEEN 29 AND 1024),
    created_at         timestamptz NOT NULL,
    -- When the key stopped signing; NULL for the one current key.
    retired_at         timestamptz,
    -- Until when a retired key stays in the JWKS: retirement + the longest token lifetime +
    -- the replicas' reload interval + clock skew, so every token it signed expires first.
    publish_until      timestamptz,
    CHECK ((retired_at IS NULL) = (publish_until IS NULL)),
    -- Not retired_at >= created_at: replicas' clocks differ, and a rotation must not fail
    -- because the replica retiring a key runs a second behind the one that created it.
    CHECK (publish_until > retired_at)
);

-- Exactly one current key. Replicas starting together race to create the first key with
-- INSERT … ON CONFLICT on this index: one wins, the others load the winner's key.
CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys ((retired_at IS NULL))
    WHERE retired_at IS NULL;

ALTER TABLE signing_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE signing_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY keys_select ON signing_keys FOR SELECT USING (true);
-- A new key is always inserted as the current one.
CREATE POLICY keys_insert ON signing_keys FOR INSERT
    WITH CHECK (retired_at IS NULL AND publish_until IS NULL);
-- The only update is retiring the current key.
CREATE POLICY keys_retire ON signing_keys FOR UPDATE
    USING (retired_at IS NULL)
    WITH CHECK (retired_at IS NOT NULL AND publish_until IS NOT NULL);

-- +goose StatementBegin
CREATE FUNCTION signing_keys_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.kid IS DISTINCT FROM OLD.kid
       OR NEW.alg IS DISTINCT FROM OLD.alg
       OR NEW.public_key IS DISTINCT FROM OLD.public_key
       OR NEW.sealed_private_key IS DISTINCT FROM OLD.sealed_private_key
       OR NEW.created_at IS DISTINCT FROM OLD.created_at
       OR (OLD.retired_at IS NOT NULL AND (NEW.retired_at IS DISTINCT FROM OLD.retired_at
           OR NEW.publish_until IS DISTINCT FROM OLD.publish_until)) THEN
        RAISE EXCEPTION 'signing_keys: only retiring the current key is allowed'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER signing_keys_immutable BEFORE UPDATE ON signing_keys
    FOR EACH ROW EXECUTE FUNCTION signing_keys_immutable();

-- +goose Down
DROP TABLE signing_keys;
DROP FUNCTION signing_keys_immutable();
