package vault

// ProvisionerPolicy returns the HCL policy of the provisioner credential for mode. The same text
// ships as deploy/vault/provisioner.hcl (mount mode) and deploy/vault/provisioner-namespace.hcl
// (namespace mode, written in the parent namespace); a test keeps them identical.
//
// What it cannot do matters as much as what it can: it cannot read or write any tenant's
// credentials (no <kv>/data or <kv>/metadata), encrypt, decrypt or export with any key, change
// the JWT auth method's trust (mount mode), mount anything outside bulkhead-kv/, or write a role
// that grants a policy not named bulkhead-tenant-*. It can create and destroy tenants' layouts,
// which is its job — so its token is kept off the request path and its loss means "tenants can
// be shredded", not "secrets can be read".
func ProvisionerPolicy(mode Mode) string {
	if mode == ModeNamespace {
		return provisionerPolicyNamespace
	}
	return provisionerPolicyMount
}

const provisionerPolicyMount = `# Bulkhead vault-broker provisioner, mount mode (open-source Vault).
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
`

const provisionerPolicyNamespace = `# Bulkhead vault-broker provisioner, namespace mode (Vault Enterprise, HCP Vault, OpenBao).
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
`
