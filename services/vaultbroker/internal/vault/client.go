package vault

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	vaultapi "github.com/hashicorp/vault-client-go"
)

// newAPIClient builds a vault-client-go client with no client-wide token or namespace: every
// caller either sets both explicitly right after (one client per tenant, which never changes
// namespace) or passes them per request. vault-client-go cannot clear a client-wide value with
// an empty WithToken/WithNamespace, so a shared client with defaults could leak them.
func newAPIClient(c *Config) (*vaultapi.Client, error) {
	// Start from the library's defaults (retry policy, jittered backoff, an error handler that
	// passes the last response through so a 5xx still arrives as a ResponseError) and shorten
	// the waits: an unavailable Vault should surface within a second, not after several.
	retry := vaultapi.DefaultConfiguration().RetryConfiguration
	retry.RetryWaitMin = 100 * time.Millisecond
	retry.RetryWaitMax = 400 * time.Millisecond
	retry.RetryMax = max(c.MaxRetries, 0)
	client, err := vaultapi.New(
		vaultapi.WithAddress(c.Addr),
		vaultapi.WithHTTPClient(c.HTTPClient),
		vaultapi.WithRequestTimeout(c.RequestTimeout),
		vaultapi.WithRetryConfiguration(retry),
	)
	if err != nil {
		return nil, fmt.Errorf("vault client for %s: %w", c.Addr, err)
	}
	return client, nil
}

// Helpers for vault-client-go's map[string]any responses (numbers arrive as json.Number).

func asInt(v any) int64 {
	switch n := v.(type) {
	case json.Number:
		i, _ := n.Int64()
		return i
	case float64:
		return int64(n)
	case int:
		return int64(n)
	case int64:
		return n
	case string:
		i, _ := strconv.ParseInt(n, 10, 64)
		return i
	}
	return 0
}

func asString(v any) string {
	s, _ := v.(string)
	return s
}

func asBool(v any) bool {
	b, _ := v.(bool)
	return b
}

func asTime(v any) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, asString(v))
	return t
}

func asStrings(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, e := range list {
		out = append(out, fmt.Sprint(e))
	}
	return out
}

func asMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}
