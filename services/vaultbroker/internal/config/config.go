// Package config reads the vault-broker's configuration from the environment (the table in
// services/vaultbroker/README.md) and validates it before anything is built. Secrets are held
// in Secret values, which print as "[redacted]" through fmt, %#v, JSON and log/slog, so
// logging a Config can never leak one.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/bulkhead/bulkhead/pkg/secret"
)

// Environment variable names.
const (
	EnvGRPCAddr           = "BULKHEAD_VAULTBROKER_GRPC_ADDR"
	EnvDatabaseURL        = "BULKHEAD_VAULTBROKER_DATABASE_URL"
	EnvMigrateDatabaseURL = "BULKHEAD_VAULTBROKER_MIGRATE_DATABASE_URL"
	EnvClientID           = "BULKHEAD_VAULTBROKER_CLIENT_ID"
	EnvClientSecret       = "BULKHEAD_VAULTBROKER_CLIENT_SECRET"
	EnvRateLimit          = "BULKHEAD_VAULTBROKER_RATE_LIMIT"
	EnvRateBurst          = "BULKHEAD_VAULTBROKER_RATE_BURST"
	EnvVaultAddr          = "VAULT_ADDR"
	EnvProvisionerToken   = "BULKHEAD_VAULT_PROVISIONER_TOKEN"
	EnvAdminToken         = "BULKHEAD_VAULT_ADMIN_TOKEN"
	EnvVaultMode          = "BULKHEAD_VAULT_MODE"
	EnvNamespaceParent    = "BULKHEAD_VAULT_NAMESPACE_PARENT"
	EnvVaultJWKSURL       = "BULKHEAD_VAULT_JWKS_URL"
	EnvVaultTokenType     = "BULKHEAD_VAULT_TOKEN_TYPE"
	EnvVaultCacheSize     = "BULKHEAD_VAULT_CACHE_SIZE"
	EnvIdentityAddr       = "BULKHEAD_IDENTITY_ADDR"
	EnvIdentityJWKSURL    = "BULKHEAD_IDENTITY_JWKS_URL"
	EnvIssuer             = "BULKHEAD_ISSUER"
	EnvTenantStatusTTL    = "BULKHEAD_TENANT_STATUS_TTL"
	EnvLogLevel           = "BULKHEAD_LOG_LEVEL"
)

// Defaults.
const (
	DefaultGRPCAddr        = "127.0.0.1:7003"
	DefaultClientID        = "vaultbroker"
	DefaultVaultMode       = "mount"
	DefaultVaultTokenType  = "batch"
	DefaultIssuer          = "bulkhead-identity"
	DefaultTenantStatusTTL = 2 * time.Second
	DefaultRateLimit       = 50
	DefaultRateBurst       = 100
)

// Secret is a configuration value that must never be printed (see pkg/secret); an alias, so
// Secret(v) conversions and Reveal read as before.
type Secret = secret.Value

// Config is the vault-broker's configuration.
type Config struct {
	// GRPCAddr is the gRPC listen address.
	GRPCAddr string
	// DatabaseURL connects as the broker's app role (INSERT and SELECT on the audit table,
	// no BYPASSRLS, owns nothing).
	DatabaseURL Secret
	// MigrateDatabaseURL connects as the owner role; when set, migrations run at start-up.
	MigrateDatabaseURL Secret

	// VaultAddr is Vault's base URL.
	VaultAddr string
	// ProvisionerToken carries only the provisioner policy (deploy/vault/provisioner*.hcl):
	// it creates and deletes tenants' layouts and cannot read a secret.
	ProvisionerToken Secret
	// AdminToken, when set, makes start-up run vault.Bootstrap (JWT auth trusting identity,
	// the shared transit mount, the provisioner policy). Meant for development and `bulkhead
	// run`; in production an operator bootstraps once and this stays unset. It is used once
	// and not kept.
	AdminToken Secret
	// VaultMode is "mount" (open-source Vault) or "namespace" (Vault Enterprise, HCP Vault,
	// OpenBao ≥ 2.3). It is verified against the server at start-up.
	VaultMode string
	// NamespaceParent holds the tenant namespaces (namespace mode), e.g. "bulkhead/tenants".
	NamespaceParent string
	// VaultJWKSURL is where *Vault* fetches identity's keys to verify tenant JWTs; default
	// IdentityJWKSURL (set it when Vault reaches identity by another address).
	VaultJWKSURL string
	// VaultTokenType of tenant tokens: "batch" (default) or "service".
	VaultTokenType string
	// VaultCacheSize bounds the tenant token cache (0: the Vault layer's default, 16,384).
	VaultCacheSize int

	// IdentityAddr is identity's gRPC address (host:port).
	IdentityAddr string
	// IdentityJWKSURL is identity's /.well-known/jwks.json.
	IdentityJWKSURL string
	// Issuer is identity's `iss`.
	Issuer string
	// ClientID and ClientSecret are the broker's platform credential on identity (scopes
	// tokens.exchange and tenants.status).
	ClientID     string
	ClientSecret Secret
	// TenantStatusTTL bounds how stale the kill switch may be.
	TenantStatusTTL time.Duration

	// RateLimit (requests per second) and RateBurst size each tenant's token bucket.
	RateLimit float64
	RateBurst int
	// LogLevel is the minimum level logged.
	LogLevel slog.Level
}

// Default returns the defaults (no addresses of other servers, no secrets).
func Default() Config {
	return Config{
		GRPCAddr:        DefaultGRPCAddr,
		VaultMode:       DefaultVaultMode,
		VaultTokenType:  DefaultVaultTokenType,
		Issuer:          DefaultIssuer,
		ClientID:        DefaultClientID,
		TenantStatusTTL: DefaultTenantStatusTTL,
		RateLimit:       DefaultRateLimit,
		RateBurst:       DefaultRateBurst,
		LogLevel:        slog.LevelInfo,
	}
}

// FromEnv reads the configuration through getenv (os.Getenv in main), starting from Default.
// It reports unparsable values; call Validate for the rest.
func FromEnv(getenv func(string) string) (Config, error) {
	c := Default()
	var errs []error
	str := func(name string, dst *string) {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			*dst = v
		}
	}
	secret := func(name string, dst *Secret) {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			*dst = Secret(v)
		}
	}
	integer := func(name string, dst *int) {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
				return
			}
			*dst = n
		}
	}
	str(EnvGRPCAddr, &c.GRPCAddr)
	secret(EnvDatabaseURL, &c.DatabaseURL)
	secret(EnvMigrateDatabaseURL, &c.MigrateDatabaseURL)
	str(EnvVaultAddr, &c.VaultAddr)
	secret(EnvProvisionerToken, &c.ProvisionerToken)
	secret(EnvAdminToken, &c.AdminToken)
	str(EnvVaultMode, &c.VaultMode)
	str(EnvNamespaceParent, &c.NamespaceParent)
	str(EnvVaultJWKSURL, &c.VaultJWKSURL)
	str(EnvVaultTokenType, &c.VaultTokenType)
	integer(EnvVaultCacheSize, &c.VaultCacheSize)
	str(EnvIdentityAddr, &c.IdentityAddr)
	str(EnvIdentityJWKSURL, &c.IdentityJWKSURL)
	str(EnvIssuer, &c.Issuer)
	str(EnvClientID, &c.ClientID)
	secret(EnvClientSecret, &c.ClientSecret)
	if v := strings.TrimSpace(getenv(EnvTenantStatusTTL)); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", EnvTenantStatusTTL, err))
		} else {
			c.TenantStatusTTL = d
		}
	}
	if v := strings.TrimSpace(getenv(EnvRateLimit)); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", EnvRateLimit, err))
		} else {
			c.RateLimit = f
		}
	}
	integer(EnvRateBurst, &c.RateBurst)
	if v := strings.TrimSpace(getenv(EnvLogLevel)); v != "" {
		if err := c.LogLevel.UnmarshalText([]byte(v)); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", EnvLogLevel, err))
		}
	}
	return c, errors.Join(errs...)
}

// clientIDPattern is what a service name may look like (pkg/authn refuses others).
var clientIDPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// Validate reports every problem at once, naming the environment variable to fix. Messages
// never include a secret's value.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if _, _, err := net.SplitHostPort(c.GRPCAddr); err != nil {
		add("%s: %q is not host:port", EnvGRPCAddr, c.GRPCAddr)
	}
	if c.DatabaseURL == "" {
		add("%s is required (the broker's app role; the audit log lives there)", EnvDatabaseURL)
	} else if !isPostgresURL(c.DatabaseURL.Reveal()) {
		add("%s is not a postgres:// URL", EnvDatabaseURL)
	}
	if c.MigrateDatabaseURL != "" && !isPostgresURL(c.MigrateDatabaseURL.Reveal()) {
		add("%s is not a postgres:// URL", EnvMigrateDatabaseURL)
	}
	if !isHTTPURL(c.VaultAddr) {
		add("%s must be Vault's http(s):// address", EnvVaultAddr)
	}
	if c.ProvisionerToken == "" {
		add("%s is required", EnvProvisionerToken)
	}
	switch c.VaultMode {
	case "mount":
	case "namespace":
		if strings.Trim(c.NamespaceParent, "/") == "" {
			add("%s is required in namespace mode", EnvNamespaceParent)
		}
	default:
		add("%s: %q, want \"mount\" or \"namespace\"", EnvVaultMode, c.VaultMode)
	}
	if c.VaultTokenType != "batch" && c.VaultTokenType != "service" {
		add("%s: %q, want \"batch\" or \"service\"", EnvVaultTokenType, c.VaultTokenType)
	}
	if c.VaultCacheSize < 0 {
		add("%s must not be negative", EnvVaultCacheSize)
	}
	if c.VaultJWKSURL != "" && !isHTTPURL(c.VaultJWKSURL) {
		add("%s must be an http(s):// URL", EnvVaultJWKSURL)
	}
	if _, _, err := net.SplitHostPort(c.IdentityAddr); err != nil {
		add("%s: %q is not host:port", EnvIdentityAddr, c.IdentityAddr)
	}
	if !isHTTPURL(c.IdentityJWKSURL) {
		add("%s must be identity's http(s):// JWKS URL", EnvIdentityJWKSURL)
	}
	if c.Issuer == "" {
		add("%s must not be empty", EnvIssuer)
	}
	if !clientIDPattern.MatchString(c.ClientID) {
		add("%s: %q is not a service name", EnvClientID, c.ClientID)
	}
	if c.ClientSecret == "" {
		add("%s is required (the broker's platform credential on identity)", EnvClientSecret)
	}
	if c.TenantStatusTTL <= 0 || c.TenantStatusTTL > time.Minute {
		add("%s must be within (0, 1m]: it bounds how long a suspended tenant is still served", EnvTenantStatusTTL)
	}
	if c.RateLimit <= 0 || c.RateBurst <= 0 {
		add("%s and %s must be positive", EnvRateLimit, EnvRateBurst)
	}
	return errors.Join(errs...)
}

// JWKSURLForVault is the JWKS URL Vault's JWT auth is configured with.
func (c Config) JWKSURLForVault() string {
	if c.VaultJWKSURL != "" {
		return c.VaultJWKSURL
	}
	return c.IdentityJWKSURL
}

func isPostgresURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql")
}

func isHTTPURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// AppRole returns the role name in the app database URL, which migrations grant to.
func AppRole(databaseURL Secret) (string, error) {
	u, err := url.Parse(databaseURL.Reveal())
	if err != nil || u.User == nil || u.User.Username() == "" {
		return "", errors.New("names no user (the app role)")
	}
	return u.User.Username(), nil
}
