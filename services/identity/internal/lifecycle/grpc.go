package lifecycle

import (
	"context"
	"fmt"
	"math"

	"google.golang.org/grpc"

	connectionv1 "github.com/bulkhead/bulkhead/gen/bulkhead/connection/v1"
	syncv1 "github.com/bulkhead/bulkhead/gen/bulkhead/sync/v1"
	brokerv1 "github.com/bulkhead/bulkhead/gen/bulkhead/vaultbroker/v1"
)

// NoTenantMethods are the participants' methods the saga calls acting as identity itself, for
// grpcclient.Options.NoTenantMethods.
var NoTenantMethods = []string{
	brokerv1.BrokerService_ProvisionTenant_FullMethodName,
	brokerv1.BrokerService_DeprovisionTenant_FullMethodName,
	connectionv1.TenantOffboardingService_OffboardTenant_FullMethodName,
	syncv1.TenantDataService_PurgeTenant_FullMethodName,
}

// VaultClient is Vault over the vault-broker's gRPC API.
type VaultClient struct{ c brokerv1.BrokerServiceClient }

// NewVaultClient returns a VaultClient on conn, which must send identity's own token
// (grpcclient with NoTenantMethods).
func NewVaultClient(conn grpc.ClientConnInterface) *VaultClient {
	return &VaultClient{c: brokerv1.NewBrokerServiceClient(conn)}
}

// ProvisionTenant implements Vault.
func (v *VaultClient) ProvisionTenant(ctx context.Context, tenantID string) error {
	_, err := v.c.ProvisionTenant(ctx, &brokerv1.ProvisionTenantRequest{TenantId: tenantID})
	if err != nil {
		return fmt.Errorf("vault-broker ProvisionTenant: %w", err)
	}
	return nil
}

// DeprovisionTenant implements Vault.
func (v *VaultClient) DeprovisionTenant(ctx context.Context, tenantID string) error {
	_, err := v.c.DeprovisionTenant(ctx, &brokerv1.DeprovisionTenantRequest{TenantId: tenantID})
	if err != nil {
		return fmt.Errorf("vault-broker DeprovisionTenant: %w", err)
	}
	return nil
}

// ConnectionsClient is Connections over the connection service's gRPC API.
type ConnectionsClient struct {
	c connectionv1.TenantOffboardingServiceClient
}

// NewConnectionsClient returns a ConnectionsClient on conn (see NewVaultClient).
func NewConnectionsClient(conn grpc.ClientConnInterface) *ConnectionsClient {
	return &ConnectionsClient{c: connectionv1.NewTenantOffboardingServiceClient(conn)}
}

// OffboardTenant implements Connections.
func (c *ConnectionsClient) OffboardTenant(ctx context.Context, tenantID string, abandonPending bool) (int, error) {
	resp, err := c.c.OffboardTenant(ctx, &connectionv1.OffboardTenantRequest{TenantId: tenantID, AbandonPending: abandonPending})
	if err != nil {
		return 0, fmt.Errorf("connection OffboardTenant: %w", err)
	}
	return int(min(max(resp.GetPending(), 0), math.MaxInt32)), nil
}

// SyncClient is Sync over the sync service's gRPC API.
type SyncClient struct {
	c syncv1.TenantDataServiceClient
}

// NewSyncClient returns a SyncClient on conn (see NewVaultClient).
func NewSyncClient(conn grpc.ClientConnInterface) *SyncClient {
	return &SyncClient{c: syncv1.NewTenantDataServiceClient(conn)}
}

// PurgeTenant implements Sync.
func (s *SyncClient) PurgeTenant(ctx context.Context, tenantID string) (bool, error) {
	resp, err := s.c.PurgeTenant(ctx, &syncv1.PurgeTenantRequest{TenantId: tenantID})
	if err != nil {
		return false, fmt.Errorf("sync PurgeTenant: %w", err)
	}
	return resp.GetDone(), nil
}
