# Bulkhead vault-broker provisioner, namespace mode (Vault Enterprise, HCP Vault, OpenBao).
# Write this policy in the PARENT namespace (the broker's namespace_parent); "+" below is one
# tenant namespace (or a start-up canary) directly under it. Creates and deletes tenants'
# namespaces and their contents; never reads a secret.
# Generated from services/vaultbroker/internal/vault/policies.go.

# Tenant namespaces and the start-up canary namespaces.
path "sys/namespaces/*" {
  capabilities = ["create", "read", "update", "delete", "list"]
}

# Inside a tenant namespace: the JWT auth method trusting identity (enabling needs sudo).
path "+/sys/auth/jwt-bulkhead" {
  capabilities = ["create", "read", "update", "delete", "sudo"]
}
path "+/auth/jwt-bulkhead/config" {
  capabilities = ["create", "read", "update"]
}
path "+/auth/jwt-bulkhead/role/tenant" {
  capabilities = ["create", "read", "update", "delete"]
  allowed_parameters = {
    "token_policies" = ["bulkhead-tenant"]
    "*"              = []
  }
  denied_parameters = {
    "policies" = []
  }
}

# The KV v2 and transit mounts, KV config and the tenant's transit key.
path "+/sys/mounts/bulkhead-kv" {
  capabilities = ["create", "read", "update", "delete"]
}
path "+/sys/mounts/bulkhead-transit" {
  capabilities = ["create", "read", "update", "delete"]
}
path "+/bulkhead-kv/config" {
  capabilities = ["create", "read", "update"]
}
path "+/bulkhead-transit/keys/tenant" {
  capabilities = ["create", "read", "update", "delete"]
}
path "+/bulkhead-transit/keys/tenant/config" {
  capabilities = ["update"]
}

# The tenant policy, and the canary policy of the start-up namespace check.
path "+/sys/policies/acl/bulkhead-tenant" {
  capabilities = ["create", "read", "update", "delete"]
}
path "+/sys/policies/acl/bulkhead-canary" {
  capabilities = ["create", "read", "update", "delete"]
}
