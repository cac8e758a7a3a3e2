// Package broker is the sync service's client of the vault-broker: Encrypt and Decrypt with a
// tenant's transit key (seal.Cipher). Calls act for the tenant with the service's tenant
// background token from identity (svc:sync within the tenant) and carry the service's own token
// as x-bulkhead-service-token (pkg/grpcclient), so the broker authorizes both the hop and the
// tenant; the tenant of a call comes from that token, never from a record.
package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"

	brokerv1 "github.com/bulkhead/bulkhead/gen/bulkhead/vaultbroker/v1"
	"github.com/bulkhead/bulkhead/pkg/grpcclient"
	"github.com/bulkhead/bulkhead/services/sync/internal/seal"
)

// Audience is the vault-broker's audience.
const Audience = "bulkhead.vaultbroker"

// Identity supplies the service's tokens (identity.Client).
type Identity interface {
	// ServiceToken is the service's own token; it must carry Audience.
	ServiceToken(ctx context.Context) (string, error)
	// TenantToken is the service's token within tenantID for audiences.
	TenantToken(ctx context.Context, tenantID string, audiences ...string) (string, error)
}

// Client implements seal.Cipher on the vault-broker. Safe for concurrent use.
type Client struct {
	c       brokerv1.BrokerServiceClient
	ids     Identity
	timeout time.Duration
}

var _ seal.Cipher = (*Client)(nil)

// Dial returns a Client of the broker at addr and its connection, which the caller closes.
func Dial(addr string, ids Identity) (*Client, *grpc.ClientConn, error) {
	if addr == "" || ids == nil {
		return nil, nil, errors.New("broker: address and identity are required")
	}
	conn, err := grpcclient.Dial(addr, grpcclient.Options{ServiceToken: grpcclient.TokenSourceFunc(ids.ServiceToken)})
	if err != nil {
		return nil, nil, fmt.Errorf("broker: %w", err)
	}
	return &Client{c: brokerv1.NewBrokerServiceClient(conn), ids: ids, timeout: 10 * time.Second}, conn, nil
}

func (c *Client) actAs(ctx context.Context, tenantID string) (context.Context, error) {
	tok, err := c.ids.TenantToken(ctx, tenantID, Audience)
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	return grpcclient.ActAs(ctx, tenantID, tok), nil
}

// Encrypt encrypts plaintext with tenantID's transit key.
func (c *Client) Encrypt(ctx context.Context, tenantID string, plaintext []byte) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	ctx, err := c.actAs(ctx, tenantID)
	if err != nil {
		return "", err
	}
	resp, err := c.c.Encrypt(ctx, &brokerv1.EncryptRequest{TenantId: tenantID, Plaintext: plaintext})
	if err != nil {
		return "", fmt.Errorf("broker: encrypt: %w", err)
	}
	return resp.GetCiphertext(), nil
}

// Decrypt decrypts a ciphertext of Encrypt for the same tenant.
func (c *Client) Decrypt(ctx context.Context, tenantID, ciphertext string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	ctx, err := c.actAs(ctx, tenantID)
	if err != nil {
		return nil, err
	}
	resp, err := c.c.Decrypt(ctx, &brokerv1.DecryptRequest{TenantId: tenantID, Ciphertext: ciphertext})
	if err != nil {
		return nil, fmt.Errorf("broker: decrypt: %w", err)
	}
	return resp.GetPlaintext(), nil
}
