// Package broker is the connection service's client of the vault-broker, where every
// credential it handles rests. Calls act for the principal in the context (pkg/grpcclient
// forwards the incoming caller's token, or the one set with grpcclient.ActAs) and carry the
// connection service's own token, so the broker can check both who acts and that the hop comes
// from the connection service. Nothing here caches a secret.
package broker

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	brokerv1 "github.com/bulkhead/bulkhead/gen/bulkhead/vaultbroker/v1"
)

// Errors the use cases branch on; every other broker error is returned as the broker's status
// (Unavailable, TENANT_SUSPENDED…), which the error interceptor passes through.
var (
	// ErrNotFound: no such credential (or the tenant has no Vault layout yet).
	ErrNotFound = errors.New("broker: credential not found")
	// ErrConflict: a check-and-set write lost: the credential's version is not the expected one.
	ErrConflict = errors.New("broker: credential version conflict")
)

// Credential is one version of a stored credential.
type Credential struct {
	Data    map[string]string
	Version int64
}

// Client calls the vault-broker. Safe for concurrent use.
type Client struct {
	c brokerv1.BrokerServiceClient
}

// New returns a Client on conn, which must carry pkg/grpcclient's interceptors.
func New(conn grpc.ClientConnInterface) *Client {
	return &Client{c: brokerv1.NewBrokerServiceClient(conn)}
}

// Get reads version (0: the latest) of credential id.
func (b *Client) Get(ctx context.Context, tenantID, id string, version int64) (Credential, error) {
	resp, err := b.c.GetCredential(ctx, &brokerv1.GetCredentialRequest{TenantId: tenantID, ConnectionId: id, Version: version})
	if err != nil {
		return Credential{}, mapError("get credential", err)
	}
	return Credential{Data: resp.GetData(), Version: resp.GetVersion()}, nil
}

// Put writes data as the next version of credential id if its current version is expected (0:
// only if it does not exist) and returns the new version.
func (b *Client) Put(ctx context.Context, tenantID, id string, data map[string]string, expected int64) (int64, error) {
	resp, err := b.c.PutCredential(ctx, &brokerv1.PutCredentialRequest{TenantId: tenantID, ConnectionId: id, Data: data, ExpectedVersion: expected})
	if err != nil {
		return 0, mapError("put credential", err)
	}
	return resp.GetVersion(), nil
}

// Delete deletes every version of credential id. Deleting a missing credential succeeds.
func (b *Client) Delete(ctx context.Context, tenantID, id string) error {
	_, err := b.c.DeleteCredential(ctx, &brokerv1.DeleteCredentialRequest{TenantId: tenantID, ConnectionId: id})
	if err = mapError("delete credential", err); errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

// Encrypt encrypts plaintext with the tenant's own transit key.
func (b *Client) Encrypt(ctx context.Context, tenantID string, plaintext []byte) (string, error) {
	resp, err := b.c.Encrypt(ctx, &brokerv1.EncryptRequest{TenantId: tenantID, Plaintext: plaintext})
	if err != nil {
		return "", mapError("encrypt", err)
	}
	return resp.GetCiphertext(), nil
}

// Decrypt decrypts what Encrypt returned for the same tenant.
func (b *Client) Decrypt(ctx context.Context, tenantID, ciphertext string) ([]byte, error) {
	resp, err := b.c.Decrypt(ctx, &brokerv1.DecryptRequest{TenantId: tenantID, Ciphertext: ciphertext})
	if err != nil {
		return nil, mapError("decrypt", err)
	}
	return resp.GetPlaintext(), nil
}

// mapError turns the two statuses the use cases branch on into sentinels (keeping the status
// as the cause) and passes every other one through.
func mapError(op string, err error) error {
	if err == nil {
		return nil
	}
	switch status.Code(err) {
	case codes.NotFound:
		return fmt.Errorf("%w: %s: %w", ErrNotFound, op, err)
	case codes.Aborted:
		return fmt.Errorf("%w: %s: %w", ErrConflict, op, err)
	}
	return err
}
