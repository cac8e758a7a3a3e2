package vault

import (
	"context"

	vaultapi "github.com/hashicorp/vault-client-go"
)

// TenantTokenForTest returns the broker's current Vault token for tenant (logging in if
// needed), so tests can try to misuse it directly against Vault.
func TenantTokenForTest(ctx context.Context, b *Broker, tenant string) (string, error) {
	e, err := b.cache.entry(tenant)
	if err != nil {
		return "", err
	}
	st, err := b.cache.token(ctx, e)
	if err != nil {
		return "", err
	}
	return st.token, nil
}

// ReplaceTokenForTest swaps tenant's cached token for token (e.g. one Vault no longer accepts).
func ReplaceTokenForTest(b *Broker, tenant, token string) bool {
	e, ok := b.cache.lru.Peek(tenant)
	if !ok {
		return false
	}
	st := e.state.Load()
	if st == nil {
		return false
	}
	next := *st
	next.token = token
	e.state.Store(&next)
	return true
}

// CanaryIsolationForTest runs the namespace canary check across two namespace headers.
func CanaryIsolationForTest(ctx context.Context, client *vaultapi.Client, nsA, nsB string) error {
	return canaryIsolation(ctx, client, nsA, nsB)
}
