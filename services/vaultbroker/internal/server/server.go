// Package server holds the vault-broker's gRPC handlers, its authorization policy and its
// audit interceptor. Handlers are thin: resolve the tenant from the verified claims (a request
// naming another tenant is NOT_FOUND before Vault is asked), call the Vault layer with that
// tenant, map the result. Everything that decides who may call runs earlier, in the
// interceptor chain (pkg/grpcserver) with Policy; every call that got past authentication is
// audited by Auditor.
package server

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	brokerv1 "github.com/bulkhead/bulkhead/gen/bulkhead/vaultbroker/v1"
	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/pkg/claims"
	"github.com/bulkhead/bulkhead/pkg/grpcserver"
	"github.com/bulkhead/bulkhead/services/vaultbroker/internal/vault"
)

// Vault is what the handlers need of the Vault layer (*vault.Broker): a tenant's operations,
// each run with that tenant's own Vault token. The tenant argument always comes from verified
// claims.
type Vault interface {
	PutCredential(ctx context.Context, tenantID, credentialID string, data map[string]string, expectedVersion int) (int, error)
	GetCredential(ctx context.Context, tenantID, credentialID string, version int) (vault.Credential, error)
	DeleteCredential(ctx context.Context, tenantID, credentialID string) error
	ListCredentialVersions(ctx context.Context, tenantID, credentialID string) (vault.CredentialVersions, error)
	Encrypt(ctx context.Context, tenantID string, plaintext []byte) (string, int, error)
	Decrypt(ctx context.Context, tenantID, ciphertext string) ([]byte, error)
	RotateKey(ctx context.Context, tenantID string) (int, error)
	// Forget drops the tenant's cached Vault token (after deprovisioning).
	Forget(tenantID string)
	MaxSecretBytes() int
}

// Provisioner creates and deletes tenants' layouts with the provisioner credential
// (*vault.Provisioner). It is never used for a tenant's data.
type Provisioner interface {
	Provision(ctx context.Context, tenantID string) (vault.ProvisionResult, error)
	Deprovision(ctx context.Context, tenantID string) (vault.ProvisionResult, error)
}

var (
	_ Vault       = (*vault.Broker)(nil)
	_ Provisioner = (*vault.Provisioner)(nil)
)

// Server implements BrokerService.
type Server struct {
	// Unsafe, not Unimplemented: a new RPC in the proto breaks the build until it is
	// implemented here (and Policy and the tests' method table name it).
	brokerv1.UnsafeBrokerServiceServer

	vault Vault
	prov  Provisioner
	mode  vault.Mode
}

// New returns the handlers over v (tenant operations) and p (provisioning) for a broker
// serving mode.
func New(v Vault, p Provisioner, mode vault.Mode) (*Server, error) {
	if v == nil || p == nil {
		return nil, errors.New("server: vault broker and provisioner are required")
	}
	return &Server{vault: v, prov: p, mode: mode}, nil
}

// Register registers s on gs and checks that Policy covers every registered method.
func Register(gs *grpcserver.Server, s *Server) error {
	brokerv1.RegisterBrokerServiceServer(gs, s)
	return gs.CheckPolicy()
}

// callerTenant returns the tenant the call acts in — the verified claims' tenant, never a
// request field — after checking that the request names the same tenant. A request for
// another tenant is refused with the NOT_FOUND a missing res gets, before Vault is asked: the
// caller learns nothing about the other tenant.
func callerTenant(ctx context.Context, requested string, res resource) (string, error) {
	c, ok := claims.FromContext(ctx)
	if !ok || c.TenantID == "" {
		// authz requires a tenant for these methods; reaching here without one is a bug.
		return "", apierr.PermissionDenied("method requires a tenant")
	}
	if canonical(requested) != c.TenantID {
		return "", apierr.NotFound(string(res)).WithCause(errTenantMismatch)
	}
	return c.TenantID, nil
}

// provisionTarget returns the tenant a provisioning call is about. Provisioning is done by a
// platform service acting as itself (no tenant in its claims) for the tenant the request
// names; should such a principal carry a tenant, it may only name that one.
func provisionTarget(ctx context.Context, requested string) (string, error) {
	t := canonical(requested)
	if t == "" {
		return "", apierr.InvalidArgument("tenant_id", "tenant_id must be a UUID")
	}
	if c, ok := claims.FromContext(ctx); ok && c.TenantID != "" && c.TenantID != t {
		return "", apierr.NotFound(string(resTenant)).WithCause(errTenantMismatch)
	}
	return t, nil
}

// canonical returns id as a canonical lower-case UUID, or "" when it is not one (or is nil).
func canonical(id string) string {
	u, err := uuid.Parse(id)
	if err != nil || u == uuid.Nil || len(id) != 36 {
		return ""
	}
	return u.String()
}

// ProvisionTenant creates the tenant's Vault layout. Idempotent.
func (s *Server) ProvisionTenant(ctx context.Context, req *brokerv1.ProvisionTenantRequest) (*brokerv1.ProvisionTenantResponse, error) {
	tenant, err := provisionTarget(ctx, req.GetTenantId())
	if err != nil {
		return nil, err
	}
	res, err := s.prov.Provision(ctx, tenant)
	if err != nil {
		return nil, vaultError(err, resTenant, "tenant_id", 0)
	}
	return &brokerv1.ProvisionTenantResponse{Mode: string(s.mode), AlreadyProvisioned: len(res.Changes) == 0}, nil
}

// DeprovisionTenant deletes the tenant's layout (crypto-shredding). Idempotent.
func (s *Server) DeprovisionTenant(ctx context.Context, req *brokerv1.DeprovisionTenantRequest) (*brokerv1.DeprovisionTenantResponse, error) {
	tenant, err := provisionTarget(ctx, req.GetTenantId())
	if err != nil {
		return nil, err
	}
	_, err = s.prov.Deprovision(ctx, tenant)
	// Drop the cached token whatever happened: its policy is gone or going.
	s.vault.Forget(tenant)
	if err != nil {
		return nil, vaultError(err, resTenant, "tenant_id", 0)
	}
	return &brokerv1.DeprovisionTenantResponse{}, nil
}

// PutCredential writes a new version of a connection's credential with check-and-set.
func (s *Server) PutCredential(ctx context.Context, req *brokerv1.PutCredentialRequest) (*brokerv1.PutCredentialResponse, error) {
	tenant, err := callerTenant(ctx, req.GetTenantId(), resCredential)
	if err != nil {
		return nil, err
	}
	if err := checkConnectionID(req.GetConnectionId()); err != nil {
		return nil, err
	}
	version, err := s.vault.PutCredential(ctx, tenant, req.GetConnectionId(), req.GetData(), int(req.GetExpectedVersion()))
	if err != nil {
		return nil, vaultError(err, resCredential, "data", s.vault.MaxSecretBytes())
	}
	return &brokerv1.PutCredentialResponse{Version: int64(version)}, nil
}

// GetCredential reads a connection's credential.
func (s *Server) GetCredential(ctx context.Context, req *brokerv1.GetCredentialRequest) (*brokerv1.GetCredentialResponse, error) {
	tenant, err := callerTenant(ctx, req.GetTenantId(), resCredential)
	if err != nil {
		return nil, err
	}
	if err := checkConnectionID(req.GetConnectionId()); err != nil {
		return nil, err
	}
	cred, err := s.vault.GetCredential(ctx, tenant, req.GetConnectionId(), int(req.GetVersion()))
	if err != nil {
		return nil, vaultError(err, resCredential, "version", 0)
	}
	return &brokerv1.GetCredentialResponse{
		Data: cred.Data, Version: int64(cred.Version), CreateTime: timestamp(cred.CreatedTime),
	}, nil
}

// DeleteCredential deletes every version of a connection's credential. Idempotent.
func (s *Server) DeleteCredential(ctx context.Context, req *brokerv1.DeleteCredentialRequest) (*brokerv1.DeleteCredentialResponse, error) {
	tenant, err := callerTenant(ctx, req.GetTenantId(), resCredential)
	if err != nil {
		return nil, err
	}
	if err := checkConnectionID(req.GetConnectionId()); err != nil {
		return nil, err
	}
	if err := s.vault.DeleteCredential(ctx, tenant, req.GetConnectionId()); err != nil {
		return nil, vaultError(err, resCredential, "connection_id", 0)
	}
	return &brokerv1.DeleteCredentialResponse{}, nil
}

// ListCredentialVersions lists a credential's version metadata (never values).
func (s *Server) ListCredentialVersions(ctx context.Context, req *brokerv1.ListCredentialVersionsRequest) (*brokerv1.ListCredentialVersionsResponse, error) {
	tenant, err := callerTenant(ctx, req.GetTenantId(), resCredential)
	if err != nil {
		return nil, err
	}
	if err := checkConnectionID(req.GetConnectionId()); err != nil {
		return nil, err
	}
	vs, err := s.vault.ListCredentialVersions(ctx, tenant, req.GetConnectionId())
	if err != nil {
		return nil, vaultError(err, resCredential, "connection_id", 0)
	}
	out := &brokerv1.ListCredentialVersionsResponse{CurrentVersion: int64(vs.Current)}
	for _, v := range vs.Versions {
		out.Versions = append(out.Versions, &brokerv1.CredentialVersion{
			Version: int64(v.Version), CreateTime: timestamp(v.CreatedTime), DeleteTime: timestamp(v.DeletionTime), Destroyed: v.Destroyed,
		})
	}
	return out, nil
}

// Encrypt encrypts with the tenant's transit key.
func (s *Server) Encrypt(ctx context.Context, req *brokerv1.EncryptRequest) (*brokerv1.EncryptResponse, error) {
	tenant, err := callerTenant(ctx, req.GetTenantId(), resTenant)
	if err != nil {
		return nil, err
	}
	ciphertext, _, err := s.vault.Encrypt(ctx, tenant, req.GetPlaintext())
	if err != nil {
		return nil, vaultError(err, resTenant, "plaintext", s.vault.MaxSecretBytes())
	}
	return &brokerv1.EncryptResponse{Ciphertext: ciphertext}, nil
}

// Decrypt decrypts a ciphertext made by Encrypt for the same tenant.
func (s *Server) Decrypt(ctx context.Context, req *brokerv1.DecryptRequest) (*brokerv1.DecryptResponse, error) {
	tenant, err := callerTenant(ctx, req.GetTenantId(), resTenant)
	if err != nil {
		return nil, err
	}
	plaintext, err := s.vault.Decrypt(ctx, tenant, req.GetCiphertext())
	if err != nil {
		return nil, vaultError(err, resTenant, "ciphertext", 2*s.vault.MaxSecretBytes())
	}
	return &brokerv1.DecryptResponse{Plaintext: plaintext}, nil
}

// RotateKey adds a version to the tenant's transit key.
func (s *Server) RotateKey(ctx context.Context, req *brokerv1.RotateKeyRequest) (*brokerv1.RotateKeyResponse, error) {
	tenant, err := callerTenant(ctx, req.GetTenantId(), resTenant)
	if err != nil {
		return nil, err
	}
	latest, err := s.vault.RotateKey(ctx, tenant)
	if err != nil {
		return nil, vaultError(err, resTenant, "tenant_id", 0)
	}
	return &brokerv1.RotateKeyResponse{LatestVersion: int64(latest)}, nil
}

// checkConnectionID requires a canonical UUID: connection ids become Vault paths, and Vault's
// KV LIST results are not filtered by policy, so an id must never carry meaning.
func checkConnectionID(id string) error {
	if canonical(id) != id {
		return apierr.InvalidArgument("connection_id", "connection_id must be a lower-case UUID")
	}
	return nil
}

// timestamp converts t, leaving unset times unset.
func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
