# Bulkhead vault-broker provisioner, mount mode (open-source Vault).
# Creates and deletes tenants' layouts; never reads a secret. Attach to the token in the
# broker's provisioner config only. Generated from services/vaultbroker/internal/vault/policies.go.

# Tenants' KV v2 mounts live under bulkhead-kv/<tenant>: enable, inspect, disable.
path "sys/mounts/bulkhead-kv/*" {
  capabilities = ["create", "read", "update", "delete"]
}

# Their KV config (cas_required, max_versions) — not their data or metadata.
path "bulkhead-kv/+/config" {
  capabilities = ["create", "read", "update"]
}

# Tenants' keys in the shared transit mount: create, inspect, allow deletion, delete.
# No encrypt/decrypt/export/backup paths.
path "bulkhead-transit/keys/+" {
  capabilities = ["create", "read", "update", "delete"]
}
path "bulkhead-transit/keys/+/config" {
  capabilities = ["update"]
}

# Tenants' policies.
path "sys/policies/acl/bulkhead-tenant-*" {
  capabilities = ["create", "read", "update", "delete"]
}

# Tenants' JWT roles. A role may only grant tenant policies.
path "auth/jwt-bulkhead/role/tenant-*" {
  capabilities = ["create", "read", "update", "delete"]
  allowed_parameters = {
    "token_policies" = ["bulkhead-tenant-*"]
    "*"              = []
  }
  denied_parameters = {
    "policies" = []
  }
}
