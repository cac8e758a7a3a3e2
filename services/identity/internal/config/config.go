// Package config reads identity's configuration from the environment (one table in
// services/identity/README.md) and validates it before anything is built. Secrets are held in
// Secret values, which print as "[redacted]" through fmt, %#v, JSON and log/slog, so logging a
// Config can never leak one.
package config

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/bulkhead/bulkhead/pkg/authz"
	"github.com/bulkhead/bulkhead/pkg/secret"
)

// Environment variable names.
const (
	EnvGRPCAddr            = "BULKHEAD_IDENTITY_GRPC_ADDR"
	EnvHTTPAddr            = "BULKHEAD_IDENTITY_HTTP_ADDR"
	EnvDatabaseURL         = "BULKHEAD_IDENTITY_DATABASE_URL"
	EnvMigrateDatabaseURL  = "BULKHEAD_IDENTITY_MIGRATE_DATABASE_URL"
	EnvIssuer              = "BULKHEAD_ISSUER"
	EnvTokenTTL            = "BULKHEAD_TOKEN_TTL"
	EnvKeyEncryptionKey    = "BULKHEAD_KEY_ENCRYPTION_KEY"
	EnvPlatformCredentials = "BULKHEAD_PLATFORM_CREDENTIALS"
	EnvTenantStatusTTL     = "BULKHEAD_TENANT_STATUS_TTL"
	EnvRateLimit           = "BULKHEAD_IDENTITY_RATE_LIMIT"
	EnvRateBurst           = "BULKHEAD_IDENTITY_RATE_BURST"
	EnvLogLevel            = "BULKHEAD_LOG_LEVEL"
	EnvDev                 = "BULKHEAD_DEV"
	EnvVaultBrokerAddr     = "BULKHEAD_VAULTBROKER_ADDR"
	EnvConnectionAddr      = "BULKHEAD_CONNECTION_ADDR"
	EnvSyncAddr            = "BULKHEAD_SYNC_ADDR"
	EnvOffboardDeadline    = "BULKHEAD_OFFBOARD_DEADLINE"
)

// Defaults.
const (
	DefaultGRPCAddr        = "127.0.0.1:7001"
	DefaultHTTPAddr        = "127.0.0.1:7080"
	DefaultIssuer          = "bulkhead-identity"
	DefaultTokenTTL        = 10 * time.Minute
	DefaultTenantStatusTTL = 2 * time.Second
	DefaultRateLimit       = 50
	DefaultRateBurst       = 100
	// DefaultOffboardDeadline is how long a deleted tenant's provider revocations are retried
	// before they are given up and its Vault layout deleted regardless: three days ride out a
	// provider's weekend outage without keeping credentials of a departed customer for long.
	DefaultOffboardDeadline = 72 * time.Hour
)

// Token lifetime bounds (docs/design.md: exp is 5–15 minutes after issue).
const (
	MinTokenTTL = 5 * time.Minute
	MaxTokenTTL = 15 * time.Minute
)

// Secret is a configuration value that must never be printed (see pkg/secret); an alias, so
// Secret(v) conversions and Reveal read as before.
type Secret = secret.Value

// Kinds of platform credential.
const (
	KindService  = "svc"
	KindOperator = "op"
)

// PlatformCredential is one entry of BULKHEAD_PLATFORM_CREDENTIALS: a Bulkhead service
// ("svc") or a platform operator ("op") that obtains tokens with a client id and secret. Only
// the secret's SHA-256 is configured, so the configuration itself holds nothing to steal.
type PlatformCredential struct {
	ClientID     string   `json:"client_id"`
	SecretSHA256 string   `json:"secret_sha256"`
	Kind         string   `json:"kind"`
	Scopes       []string `json:"scopes"`
}

// Config is identity's configuration.
type Config struct {
	// GRPCAddr is the gRPC listen address.
	GRPCAddr string
	// HTTPAddr serves /.well-known/jwks.json and /healthz; loopback by default.
	HTTPAddr string
	// DatabaseURL connects as identity's app role (no BYPASSRLS, owns nothing).
	DatabaseURL Secret
	// MigrateDatabaseURL connects as the owner role; when set, migrations run at start-up.
	// The app role named in DatabaseURL is granted what it needs.
	MigrateDatabaseURL Secret
	// Issuer is the tokens' `iss`.
	Issuer string
	// TokenTTL is the lifetime of issued tokens, within [MinTokenTTL, MaxTokenTTL].
	TokenTTL time.Duration
	// KeyEncryptionKey (base64, 32 bytes) seals the signing keys at rest. Required unless Dev.
	KeyEncryptionKey Secret
	// PlatformCredentials are the services and operators that may call IssueToken with a
	// platform credential.
	PlatformCredentials []PlatformCredential
	// TenantStatusTTL bounds how stale identity's own view of a tenant's status may be.
	TenantStatusTTL time.Duration
	// RateLimit (requests per second) and RateBurst size each tenant's token bucket.
	RateLimit float64
	RateBurst int
	// LogLevel is the minimum level logged.
	LogLevel slog.Level
	// Dev allows development shortcuts: with no key-encryption key a random one is generated
	// (signing keys then do not survive a restart), and with no platform credentials an
	// operator credential is generated and printed once at start-up.
	Dev bool
	// VaultBrokerAddr, ConnectionAddr and SyncAddr are the gRPC addresses of the tenant
	// lifecycle saga's participants. All or none: without them the saga does not run (a
	// warning says so at start-up, and every tenant shows its pending step in GetTenant).
	VaultBrokerAddr string
	ConnectionAddr  string
	SyncAddr        string
	// OffboardDeadline is how long DeleteTenant waits for providers to confirm revocations
	// before giving them up.
	OffboardDeadline time.Duration
}

// Default returns the defaults (no database URLs).
func Default() Config {
	return Config{
		GRPCAddr:         DefaultGRPCAddr,
		HTTPAddr:         DefaultHTTPAddr,
		Issuer:           DefaultIssuer,
		TokenTTL:         DefaultTokenTTL,
		TenantStatusTTL:  DefaultTenantStatusTTL,
		RateLimit:        DefaultRateLimit,
		RateBurst:        DefaultRateBurst,
		LogLevel:         slog.LevelInfo,
		OffboardDeadline: DefaultOffboardDeadline,
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
	duration := func(name string, dst *time.Duration) {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
				return
			}
			*dst = d
		}
	}
	str(EnvGRPCAddr, &c.GRPCAddr)
	str(EnvHTTPAddr, &c.HTTPAddr)
	secret(EnvDatabaseURL, &c.DatabaseURL)
	secret(EnvMigrateDatabaseURL, &c.MigrateDatabaseURL)
	str(EnvIssuer, &c.Issuer)
	duration(EnvTokenTTL, &c.TokenTTL)
	secret(EnvKeyEncryptionKey, &c.KeyEncryptionKey)
	duration(EnvTenantStatusTTL, &c.TenantStatusTTL)
	str(EnvVaultBrokerAddr, &c.VaultBrokerAddr)
	str(EnvConnectionAddr, &c.ConnectionAddr)
	str(EnvSyncAddr, &c.SyncAddr)
	duration(EnvOffboardDeadline, &c.OffboardDeadline)
	if v := strings.TrimSpace(getenv(EnvPlatformCredentials)); v != "" {
		dec := json.NewDecoder(strings.NewReader(v))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c.PlatformCredentials); err != nil {
			// The decoder's message may quote the input; it holds hashes only, never secrets.
			errs = append(errs, fmt.Errorf("%s: not a JSON list of {client_id, secret_sha256, kind, scopes}: %w", EnvPlatformCredentials, err))
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
	if v := strings.TrimSpace(getenv(EnvRateBurst)); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", EnvRateBurst, err))
		} else {
			c.RateBurst = n
		}
	}
	if v := strings.TrimSpace(getenv(EnvLogLevel)); v != "" {
		if err := c.LogLevel.UnmarshalText([]byte(v)); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", EnvLogLevel, err))
		}
	}
	if v := strings.TrimSpace(getenv(EnvDev)); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", EnvDev, err))
		} else {
			c.Dev = b
		}
	}
	return c, errors.Join(errs...)
}

// clientIDPattern is what a service or operator name may look like (pkg/authn refuses others).
var clientIDPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// Validate reports every configuration mistake at once.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for name, addr := range map[string]string{EnvGRPCAddr: c.GRPCAddr, EnvHTTPAddr: c.HTTPAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			bad("%s: %q is not host:port", name, addr)
		}
	}
	if c.DatabaseURL == "" {
		bad("%s is required", EnvDatabaseURL)
	} else if _, err := AppRole(c.DatabaseURL); err != nil {
		bad("%s: %v", EnvDatabaseURL, err)
	}
	if c.MigrateDatabaseURL != "" {
		if _, err := url.Parse(c.MigrateDatabaseURL.Reveal()); err != nil {
			bad("%s is not a URL", EnvMigrateDatabaseURL) // the error would quote the URL
		}
	}
	if c.Issuer == "" {
		bad("%s must not be empty", EnvIssuer)
	}
	if c.TokenTTL < MinTokenTTL || c.TokenTTL > MaxTokenTTL {
		bad("%s: %s is outside [%s, %s]", EnvTokenTTL, c.TokenTTL, MinTokenTTL, MaxTokenTTL)
	}
	if c.KeyEncryptionKey == "" && !c.Dev {
		bad("%s is required (or set %s=true for development)", EnvKeyEncryptionKey, EnvDev)
	}
	if c.TenantStatusTTL <= 0 || c.TenantStatusTTL > time.Minute {
		bad("%s: %s must be positive and at most 1m (it bounds how late the kill switch applies)", EnvTenantStatusTTL, c.TenantStatusTTL)
	}
	if set := btoi(c.VaultBrokerAddr != "") + btoi(c.ConnectionAddr != "") + btoi(c.SyncAddr != ""); set != 0 && set != 3 {
		bad("%s, %s and %s go together: set all three for the tenant lifecycle saga, or none", EnvVaultBrokerAddr, EnvConnectionAddr, EnvSyncAddr)
	}
	for name, addr := range map[string]string{EnvVaultBrokerAddr: c.VaultBrokerAddr, EnvConnectionAddr: c.ConnectionAddr, EnvSyncAddr: c.SyncAddr} {
		if _, _, err := net.SplitHostPort(addr); addr != "" && err != nil {
			bad("%s: %q is not host:port", name, addr)
		}
	}
	if c.OffboardDeadline <= 0 {
		bad("%s must be positive", EnvOffboardDeadline)
	}
	if c.RateLimit <= 0 || c.RateBurst <= 0 {
		bad("%s and %s must be positive", EnvRateLimit, EnvRateBurst)
	}
	seen := map[string]bool{}
	for i, pc := range c.PlatformCredentials {
		if err := pc.validate(); err != nil {
			bad("%s[%d]: %v", EnvPlatformCredentials, i, err)
		}
		if seen[pc.ClientID] {
			bad("%s[%d]: client_id %q appears twice", EnvPlatformCredentials, i, pc.ClientID)
		}
		seen[pc.ClientID] = true
	}
	return errors.Join(errs...)
}

func (pc PlatformCredential) validate() error {
	if !clientIDPattern.MatchString(pc.ClientID) {
		return fmt.Errorf("client_id %q must match %s", pc.ClientID, clientIDPattern)
	}
	if b, err := hex.DecodeString(pc.SecretSHA256); err != nil || len(b) != 32 {
		return errors.New("secret_sha256 must be 64 hex digits (the SHA-256 of the secret)")
	}
	if pc.Kind != KindService && pc.Kind != KindOperator {
		return fmt.Errorf("kind %q must be %q or %q", pc.Kind, KindService, KindOperator)
	}
	for _, s := range pc.Scopes {
		p := authz.Permission(s)
		if !authz.Known(p) {
			return fmt.Errorf("unknown scope %q", s)
		}
		// Operators hold platform permissions only; services never do. Keeping the two apart
		// means a leaked service secret cannot suspend tenants, nor an operator read credentials.
		operatorPerm := p == authz.PlatformTenantsRead || p == authz.PlatformTenantsManage
		if operatorPerm != (pc.Kind == KindOperator) {
			return fmt.Errorf("scope %q is not for kind %q", s, pc.Kind)
		}
	}
	return nil
}

// AppRole returns the role name in the app database URL: the role pgtenant.Migrate grants.
func AppRole(databaseURL Secret) (string, error) {
	u, err := url.Parse(databaseURL.Reveal())
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", errors.New("not a postgres:// URL") // the parse error would quote the URL
	}
	if u.User == nil || u.User.Username() == "" {
		return "", errors.New("names no user (identity connects as its app role)")
	}
	return u.User.Username(), nil
}

// LogValue renders the configuration for a start-up log line, secrets redacted and platform
// credentials reduced to their ids.
func (c Config) LogValue() slog.Value {
	ids := make([]string, len(c.PlatformCredentials))
	for i, pc := range c.PlatformCredentials {
		ids[i] = pc.Kind + ":" + pc.ClientID
	}
	return slog.GroupValue(
		slog.String("grpc_addr", c.GRPCAddr),
		slog.String("http_addr", c.HTTPAddr),
		slog.Any("database_url", c.DatabaseURL),
		slog.Any("migrate_database_url", c.MigrateDatabaseURL),
		slog.String("issuer", c.Issuer),
		slog.Duration("token_ttl", c.TokenTTL),
		slog.Any("key_encryption_key", c.KeyEncryptionKey),
		slog.Any("platform_clients", ids),
		slog.Duration("tenant_status_ttl", c.TenantStatusTTL),
		slog.Float64("rate_limit", c.RateLimit),
		slog.Int("rate_burst", c.RateBurst),
		slog.String("log_level", c.LogLevel.String()),
		slog.Bool("dev", c.Dev),
	)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
