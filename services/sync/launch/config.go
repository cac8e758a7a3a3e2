package launch

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Environment variables read by ConfigFromEnv.
const (
	EnvGRPCAddr           = "BULKHEAD_SYNC_GRPC_ADDR"
	EnvDatabaseURL        = "BULKHEAD_SYNC_DATABASE_URL"
	EnvMigrateDatabaseURL = "BULKHEAD_SYNC_MIGRATE_DATABASE_URL"
	EnvAppRole            = "BULKHEAD_SYNC_APP_ROLE"
	EnvClientID           = "BULKHEAD_SYNC_CLIENT_ID"
	EnvClientSecret       = "BULKHEAD_SYNC_CLIENT_SECRET"
	EnvRateLimit          = "BULKHEAD_SYNC_RATE_LIMIT"
	EnvRateBurst          = "BULKHEAD_SYNC_RATE_BURST"
	EnvMaxWorkers         = "BULKHEAD_SYNC_MAX_WORKERS"
	EnvTenantConcurrency  = "BULKHEAD_SYNC_TENANT_CONCURRENCY"
	// EnvBaseURLs gives base URLs to integrations without one, as "name=url,name=url" (test
	// providers only).
	EnvBaseURLs        = "BULKHEAD_SYNC_BASE_URLS"
	EnvConnectionAddr  = "BULKHEAD_CONNECTION_ADDR"
	EnvIdentityAddr    = "BULKHEAD_IDENTITY_ADDR"
	EnvIdentityJWKSURL = "BULKHEAD_IDENTITY_JWKS_URL"
	EnvIssuer          = "BULKHEAD_ISSUER"
	EnvTenantStatusTTL = "BULKHEAD_TENANT_STATUS_TTL"
	// EnvBrokerAddr is the vault-broker's gRPC address (sensitive fields); EnvRecordHashKey keys
	// the content hashes of records with sensitive fields (at least 32 characters, secret).
	EnvBrokerAddr    = "BULKHEAD_VAULTBROKER_ADDR"
	EnvRecordHashKey = "BULKHEAD_SYNC_RECORD_HASH_KEY"
)

// ConfigFromEnv reads the configuration from the environment through getenv, over
// DefaultConfig. It reports malformed values; Validate reports missing ones.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	c := DefaultConfig()
	var errs []error
	str := func(name string, dst *string) {
		if v := getenv(name); v != "" {
			*dst = v
		}
	}
	secret := func(name string, dst *Secret) {
		if v := getenv(name); v != "" {
			*dst = Secret(v)
		}
	}
	num := func(name string, dst *int) {
		if v := getenv(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				errs = append(errs, fmt.Errorf("%s: not a non-negative integer", name))
				return
			}
			*dst = n
		}
	}
	str(EnvGRPCAddr, &c.GRPCAddr)
	secret(EnvDatabaseURL, &c.DatabaseURL)
	secret(EnvMigrateDatabaseURL, &c.MigrateDatabaseURL)
	str(EnvAppRole, &c.AppRole)
	str(EnvClientID, &c.ClientID)
	secret(EnvClientSecret, &c.ClientSecret)
	str(EnvConnectionAddr, &c.ConnectionAddr)
	str(EnvBrokerAddr, &c.BrokerAddr)
	secret(EnvRecordHashKey, &c.RecordHashKey)
	str(EnvIdentityAddr, &c.IdentityAddr)
	str(EnvIdentityJWKSURL, &c.IdentityJWKSURL)
	str(EnvIssuer, &c.Issuer)
	num(EnvRateBurst, &c.RateBurst)
	num(EnvMaxWorkers, &c.MaxWorkers)
	num(EnvTenantConcurrency, &c.TenantConcurrency)
	if v := getenv(EnvRateLimit); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 {
			errs = append(errs, fmt.Errorf("%s: not a positive number", EnvRateLimit))
		} else {
			c.RateLimit = f
		}
	}
	if v := getenv(EnvTenantStatusTTL); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("%s: not a positive duration", EnvTenantStatusTTL))
		} else {
			c.TenantStatusTTL = d
		}
	}
	if v := getenv(EnvBaseURLs); v != "" {
		c.BaseURLs = map[string]string{}
		for pair := range strings.SplitSeq(v, ",") {
			name, u, ok := strings.Cut(strings.TrimSpace(pair), "=")
			if !ok || name == "" || u == "" {
				errs = append(errs, fmt.Errorf("%s: want name=url pairs", EnvBaseURLs))
				break
			}
			c.BaseURLs[name] = u
		}
	}
	return c, errors.Join(errs...)
}
