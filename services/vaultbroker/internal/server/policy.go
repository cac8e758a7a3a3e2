package server

import (
	"context"

	brokerv1 "github.com/bulkhead/bulkhead/gen/bulkhead/vaultbroker/v1"
	"github.com/bulkhead/bulkhead/pkg/authz"
	"github.com/bulkhead/bulkhead/pkg/claims"
	"github.com/bulkhead/bulkhead/pkg/grpcserver"
)

// The Bulkhead services that may make each kind of call. Which *service* made the hop is what
// decides, not the principal's permissions: the principal is the tenant user (or service
// account, or a service's own tenant-scoped token) the service acts for, and no tenant
// principal ever holds credentials.read or credentials.write (identity strips service scopes
// from tenant tokens). The hop's service comes from the verified service token header
// (claims.Caller) or, without one, from a `svc:` principal itself (authz.Rule.Services).
var (
	// credentialReaders may read raw secrets and decrypt: credentials.read.
	credentialReaders = []string{"connection", "sync"}
	// credentialWriters may store, delete and encrypt, and rotate the tenant's key:
	// credentials.write.
	credentialWriters = []string{"connection"}
	// encrypters may encrypt with the tenant's key: the sync service seals records' sensitive
	// fields. Encrypting releases nothing and writes nothing of the tenant's, so it needs less
	// trust than credentials.write, which sync does not get.
	encrypters = []string{"connection", "sync"}
)

// tenantPrincipals are the principals a service may act for: a tenant's user or service
// account (forwarded by the service), or the service's own token scoped to the tenant
// (background work, obtained with ExchangeToken). Each must carry a tenant; authz refuses a
// tenant principal without one.
var tenantPrincipals = []claims.Kind{claims.KindUser, claims.KindServiceAccount, claims.KindService}

// DeniedFunc is called for each call authz refuses (see authz.Rule.Denied).
type DeniedFunc func(ctx context.Context, fullMethod string, c *claims.Claims, refusal error)

// Policy returns the authorization rule of every BrokerService method. An end user's token on
// its own never passes: every tenant rule requires the hop to come from a listed service, and
// the provisioning rules require a `svc:` principal holding vault.provision. denied, if not
// nil, sees every refusal (for the audit log).
func Policy(denied DeniedFunc) authz.Policy {
	read := authz.Rule{Kinds: tenantPrincipals, Services: credentialReaders, Denied: denied}
	write := authz.Rule{Kinds: tenantPrincipals, Services: credentialWriters, Denied: denied}
	encrypt := authz.Rule{Kinds: tenantPrincipals, Services: encrypters, Denied: denied}
	// Provisioning acts on a tenant named in the request, by a platform service acting as
	// itself (no tenant): identity or an operator's job. It never touches a secret: it uses
	// the provisioner's Vault token, which cannot read one.
	provision := authz.Rule{
		Permission: authz.VaultProvision, Kinds: []claims.Kind{claims.KindService}, NoTenant: true, Denied: denied,
	}
	p := authz.Policy{
		brokerv1.BrokerService_ProvisionTenant_FullMethodName:        provision,
		brokerv1.BrokerService_DeprovisionTenant_FullMethodName:      provision,
		brokerv1.BrokerService_PutCredential_FullMethodName:          write,
		brokerv1.BrokerService_GetCredential_FullMethodName:          read,
		brokerv1.BrokerService_DeleteCredential_FullMethodName:       write,
		brokerv1.BrokerService_ListCredentialVersions_FullMethodName: read,
		brokerv1.BrokerService_Encrypt_FullMethodName:                encrypt,
		brokerv1.BrokerService_Decrypt_FullMethodName:                read,
		// Rotating needs the tenant's own Vault token (the provisioner's policy cannot rotate),
		// so it is a tenant call like a write, not a provisioning one.
		brokerv1.BrokerService_RotateKey_FullMethodName: write,
	}
	// Reflection only describes the API, whose protos are published anyway.
	for _, m := range grpcserver.ReflectionMethods {
		p[m] = authz.Rule{Public: true}
	}
	return p
}
