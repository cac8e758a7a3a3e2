// Package config reads the connection service's configuration from the environment (the table
// in services/connection/README.md) and validates it before anything is built. Secrets are
// held in Secret values, which print as "[redacted]" through fmt, %#v, JSON and log/slog, so
// logging a Config can never leak one.
package config

import (
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

	"github.com/bulkhead/bulkhead/pkg/secret"
)

// Environment variable names.
const (
	EnvGRPCAddr           = "BULKHEAD_CONNECTION_GRPC_ADDR"
	EnvHTTPAddr           = "BULKHEAD_CONNECTION_HTTP_ADDR"
	EnvCallbackURL        = "BULKHEAD_CONNECTION_CALLBACK_URL"
	EnvReturnURLPrefixes  = "BULKHEAD_CONNECTION_RETURN_URL_PREFIXES"
	EnvDatabaseURL        = "BULKHEAD_CONNECTION_DATABASE_URL"
	EnvMigrateDatabaseURL = "BULKHEAD_CONNECTION_MIGRATE_DATABASE_URL"
	EnvClientID           = "BULKHEAD_CONNECTION_CLIENT_ID"
	EnvClientSecret       = "BULKHEAD_CONNECTION_CLIENT_SECRET"
	EnvOAuthApps          = "BULKHEAD_CONNECTION_OAUTH_APPS"
	EnvRefreshMargin      = "BULKHEAD_CONNECTION_REFRESH_MARGIN"
	EnvCheckInterval      = "BULKHEAD_CONNECTION_CHECK_INTERVAL"
	EnvRevocationGiveUp   = "BULKHEAD_CONNECTION_REVOCATION_GIVE_UP"
	EnvRateLimit          = "BULKHEAD_CONNECTION_RATE_LIMIT"
	EnvRateBurst          = "BULKHEAD_CONNECTION_RATE_BURST"
	EnvBrokerAddr         = "BULKHEAD_VAULTBROKER_ADDR"
	EnvIdentityAddr       = "BULKHEAD_IDENTITY_ADDR"
	EnvIdentityJWKSURL    = "BULKHEAD_IDENTITY_JWKS_URL"
	EnvIssuer             = "BULKHEAD_ISSUER"
	EnvTenantStatusTTL    = "BULKHEAD_TENANT_STATUS_TTL"
	EnvLogLevel           = "BULKHEAD_LOG_LEVEL"

	// The Proxy RPC's egress allow-list and per (tenant, integration) limits.
	EnvProxyAllowHosts      = "BULKHEAD_CONNECTION_PROXY_ALLOW_HOSTS"
	EnvProxyRate            = "BULKHEAD_CONNECTION_PROXY_RATE"
	EnvProxyBurst           = "BULKHEAD_CONNECTION_PROXY_BURST"
	EnvProxyBreakerFailures = "BULKHEAD_CONNECTION_PROXY_BREAKER_FAILURES"
	EnvProxyBreakerOpen     = "BULKHEAD_CONNECTION_PROXY_BREAKER_OPEN"
	// The background consumers.
	EnvOffboardingDisabled = "BULKHEAD_CONNECTION_OFFBOARDING_DISABLED"
	EnvOffboardingInterval = "BULKHEAD_CONNECTION_OFFBOARDING_INTERVAL"
	EnvWorkerDisabled      = "BULKHEAD_CONNECTION_WORKER_DISABLED"
	EnvWorkerInterval      = "BULKHEAD_CONNECTION_WORKER_INTERVAL"
	EnvWorkerBatch         = "BULKHEAD_CONNECTION_WORKER_BATCH"
)

// Defaults.
const (
	DefaultGRPCAddr        = "127.0.0.1:7002"
	DefaultHTTPAddr        = "127.0.0.1:7082"
	DefaultClientID        = "connection"
	DefaultIssuer          = "bulkhead-identity"
	DefaultTenantStatusTTL = 2 * time.Second
	DefaultRefreshMargin   = 5 * time.Minute
	DefaultCheckInterval   = 24 * time.Hour
	// DefaultRevocationGiveUp: long enough to ride out a provider's outage over a weekend.
	DefaultRevocationGiveUp = 72 * time.Hour
	DefaultRateLimit        = 50
	DefaultRateBurst        = 100
)

// Secret is a configuration value that must never be printed (see pkg/secret); an alias, so
// Secret(v) conversions and Reveal read as before.
type Secret = secret.Value

// OAuthApp is the platform's OAuth client for one integration.
type OAuthApp struct {
	ClientID     string `json:"client_id"`
	ClientSecret Secret `json:"client_secret"`
}

// UnmarshalJSON reads the secret as a plain string (Secret hides it only on the way out).
func (o *OAuthApp) UnmarshalJSON(b []byte) error {
	var raw struct {
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return err
	}
	o.ClientID, o.ClientSecret = raw.ClientID, Secret(raw.ClientSecret)
	return nil
}

// Config is the connection service's configuration.
type Config struct {
	// GRPCAddr is the gRPC listen address; HTTPAddr serves the OAuth2 callback and /healthz.
	GRPCAddr string
	HTTPAddr string
	// CallbackURL is the OAuth2 redirect URI as providers (and browsers) reach it; default
	// http://<HTTPAddr>/oauth2/callback. Register it with every OAuth app.
	CallbackURL string
	// ReturnURLPrefixes are the allowed prefixes of StartAuthorization's return_url.
	ReturnURLPrefixes []string
	// DatabaseURL connects as the service's app role; MigrateDatabaseURL as the owner role
	// (when set, migrations run at start-up).
	DatabaseURL        Secret
	MigrateDatabaseURL Secret
	// BrokerAddr is the vault-broker's gRPC address.
	BrokerAddr string
	// IdentityAddr, IdentityJWKSURL and Issuer locate identity.
	IdentityAddr    string
	IdentityJWKSURL string
	Issuer          string
	// ClientID and ClientSecret are the service's platform credential on identity (scopes
	// tokens.exchange, tenants.status, credentials.read, credentials.write).
	ClientID     string
	ClientSecret Secret
	// OAuthApps are the platform's OAuth apps by integration key (tenants may bring their own).
	OAuthApps map[string]OAuthApp
	// RefreshMargin: tokens expiring within it are refreshed before they are handed out.
	RefreshMargin time.Duration
	// CheckInterval: how often credentials without expiry are tested.
	CheckInterval time.Duration
	// RevocationGiveUp: a provider revocation still unconfirmed this long after the connection
	// was revoked is given up (REVOCATION_STATE_FAILED, credential deleted).
	RevocationGiveUp time.Duration
	// TenantStatusTTL bounds how stale the kill switch may be.
	TenantStatusTTL time.Duration
	// RateLimit (requests per second) and RateBurst size each tenant's token bucket.
	RateLimit float64
	RateBurst int
	LogLevel  slog.Level

	// Proxy configures the Proxy RPC; zero values mean the packages' defaults (fairness,
	// egress). ProxyAllowHosts may be private, loopback or link-local ("host" or
	// "host:port"): only for tests and trusted internal providers.
	ProxyAllowHosts      []string
	ProxyRate            float64
	ProxyBurst           int
	ProxyBreakerFailures uint32
	ProxyBreakerOpen     time.Duration
	// OffboardingDisabled and WorkerDisabled turn the background consumers off; their
	// intervals (and the worker's batch) are zero for the defaults (5s, 30s, 500).
	OffboardingDisabled bool
	OffboardingInterval time.Duration
	WorkerDisabled      bool
	WorkerInterval      time.Duration
	WorkerBatch         int
}

// Default returns the defaults (no addresses of other servers, no secrets).
func Default() Config {
	return Config{
		GRPCAddr: DefaultGRPCAddr, HTTPAddr: DefaultHTTPAddr, Issuer: DefaultIssuer, ClientID: DefaultClientID,
		RefreshMargin: DefaultRefreshMargin, CheckInterval: DefaultCheckInterval, RevocationGiveUp: DefaultRevocationGiveUp,
		TenantStatusTTL: DefaultTenantStatusTTL, RateLimit: DefaultRateLimit, RateBurst: DefaultRateBurst,
		LogLevel: slog.LevelInfo,
	}
}

// FromEnv reads the configuration through getenv, starting from Default. It reports
// unparsable values; call Validate for the rest.
func FromEnv(getenv func(string) string) (Config, error) {
	c := Default()
	var errs []error
	get := func(name string) string { return strings.TrimSpace(getenv(name)) }
	str := func(name string, dst *string) {
		if v := get(name); v != "" {
			*dst = v
		}
	}
	secret := func(name string, dst *Secret) {
		if v := get(name); v != "" {
			*dst = Secret(v)
		}
	}
	duration := func(name string, dst *time.Duration) {
		if v := get(name); v != "" {
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
	str(EnvCallbackURL, &c.CallbackURL)
	if v := get(EnvReturnURLPrefixes); v != "" {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				c.ReturnURLPrefixes = append(c.ReturnURLPrefixes, p)
			}
		}
	}
	secret(EnvDatabaseURL, &c.DatabaseURL)
	secret(EnvMigrateDatabaseURL, &c.MigrateDatabaseURL)
	str(EnvBrokerAddr, &c.BrokerAddr)
	str(EnvIdentityAddr, &c.IdentityAddr)
	str(EnvIdentityJWKSURL, &c.IdentityJWKSURL)
	str(EnvIssuer, &c.Issuer)
	str(EnvClientID, &c.ClientID)
	secret(EnvClientSecret, &c.ClientSecret)
	if v := get(EnvOAuthApps); v != "" {
		if err := json.Unmarshal([]byte(v), &c.OAuthApps); err != nil {
			// The value holds secrets: never echo it.
			errs = append(errs, fmt.Errorf("%s: not a JSON object of {\"client_id\", \"client_secret\"} by integration", EnvOAuthApps))
		}
	}
	duration(EnvRefreshMargin, &c.RefreshMargin)
	duration(EnvCheckInterval, &c.CheckInterval)
	duration(EnvRevocationGiveUp, &c.RevocationGiveUp)
	duration(EnvTenantStatusTTL, &c.TenantStatusTTL)
	if v := get(EnvRateLimit); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", EnvRateLimit, err))
		} else {
			c.RateLimit = f
		}
	}
	if v := get(EnvRateBurst); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", EnvRateBurst, err))
		} else {
			c.RateBurst = n
		}
	}
	if v := get(EnvLogLevel); v != "" {
		if err := c.LogLevel.UnmarshalText([]byte(v)); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", EnvLogLevel, err))
		}
	}
	integer := func(name string, dst *int) {
		if v := get(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
				return
			}
			*dst = n
		}
	}
	boolean := func(name string, dst *bool) {
		if v := get(name); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
				return
			}
			*dst = b
		}
	}
	if v := get(EnvProxyAllowHosts); v != "" {
		for _, h := range strings.Split(v, ",") {
			if h = strings.TrimSpace(h); h != "" {
				c.ProxyAllowHosts = append(c.ProxyAllowHosts, h)
			}
		}
	}
	if v := get(EnvProxyRate); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", EnvProxyRate, err))
		} else {
			c.ProxyRate = f
		}
	}
	integer(EnvProxyBurst, &c.ProxyBurst)
	if v := get(EnvProxyBreakerFailures); v != "" {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", EnvProxyBreakerFailures, err))
		} else {
			c.ProxyBreakerFailures = uint32(n)
		}
	}
	duration(EnvProxyBreakerOpen, &c.ProxyBreakerOpen)
	boolean(EnvOffboardingDisabled, &c.OffboardingDisabled)
	duration(EnvOffboardingInterval, &c.OffboardingInterval)
	boolean(EnvWorkerDisabled, &c.WorkerDisabled)
	duration(EnvWorkerInterval, &c.WorkerInterval)
	integer(EnvWorkerBatch, &c.WorkerBatch)
	return c, errors.Join(errs...)
}

var integrationKey = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// Validate reports every problem at once, naming the environment variable to fix. Messages
// never include a secret's value.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for name, addr := range map[string]string{EnvGRPCAddr: c.GRPCAddr, EnvHTTPAddr: c.HTTPAddr, EnvBrokerAddr: c.BrokerAddr, EnvIdentityAddr: c.IdentityAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			add("%s: %q is not host:port", name, addr)
		}
	}
	if c.DatabaseURL == "" || !isPostgresURL(c.DatabaseURL.Reveal()) {
		add("%s must be the app role's postgres:// URL", EnvDatabaseURL)
	}
	if c.MigrateDatabaseURL != "" && !isPostgresURL(c.MigrateDatabaseURL.Reveal()) {
		add("%s is not a postgres:// URL", EnvMigrateDatabaseURL)
	}
	if !isHTTPURL(c.IdentityJWKSURL) {
		add("%s must be identity's http(s):// JWKS URL", EnvIdentityJWKSURL)
	}
	if c.CallbackURL != "" && !isHTTPURL(c.CallbackURL) {
		add("%s must be an http(s):// URL", EnvCallbackURL)
	}
	for _, p := range c.ReturnURLPrefixes {
		u, err := url.Parse(p)
		// A prefix must pin scheme, host and the slash after it: "https://app.example" would
		// also match "https://app.example.evil.com".
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || !strings.HasPrefix(u.Path, "/") {
			add("%s: %q must be an absolute http(s) URL ending its host with a path (at least \"/\")", EnvReturnURLPrefixes, p)
		}
	}
	if c.Issuer == "" {
		add("%s is required", EnvIssuer)
	}
	if c.ClientID == "" || c.ClientSecret == "" {
		add("%s and %s are required (the service's platform credential on identity)", EnvClientID, EnvClientSecret)
	}
	for key, app := range c.OAuthApps {
		if !integrationKey.MatchString(key) || app.ClientID == "" || app.ClientSecret == "" {
			add("%s: entry %q needs an integration key, client_id and client_secret", EnvOAuthApps, key)
		}
	}
	if c.RefreshMargin <= 0 || c.RefreshMargin > time.Hour {
		add("%s: %s, want more than 0 and at most 1h", EnvRefreshMargin, c.RefreshMargin)
	}
	if c.CheckInterval < time.Minute {
		add("%s: %s, want at least 1m", EnvCheckInterval, c.CheckInterval)
	}
	if c.RevocationGiveUp < time.Minute {
		add("%s: %s, want at least 1m", EnvRevocationGiveUp, c.RevocationGiveUp)
	}
	if c.TenantStatusTTL <= 0 || c.TenantStatusTTL > time.Minute {
		add("%s: %s, want more than 0 and at most 1m", EnvTenantStatusTTL, c.TenantStatusTTL)
	}
	if c.RateLimit <= 0 || c.RateBurst < 1 {
		add("%s and %s must be positive", EnvRateLimit, EnvRateBurst)
	}
	for _, h := range c.ProxyAllowHosts {
		if strings.ContainsAny(h, "/@?# ") {
			add("%s: %q must be a host or host:port", EnvProxyAllowHosts, h)
		}
	}
	if c.ProxyRate < 0 || c.ProxyBurst < 0 || c.ProxyBreakerOpen < 0 {
		add("%s, %s and %s must not be negative", EnvProxyRate, EnvProxyBurst, EnvProxyBreakerOpen)
	}
	if c.OffboardingInterval < 0 || c.WorkerInterval < 0 || c.WorkerBatch < 0 {
		add("%s, %s and %s must not be negative", EnvOffboardingInterval, EnvWorkerInterval, EnvWorkerBatch)
	}
	return errors.Join(errs...)
}

// AppRole returns the user name of a postgres URL (the role the migrations grant).
func AppRole(u Secret) (string, error) {
	parsed, err := url.Parse(u.Reveal())
	if err != nil || parsed.User == nil || parsed.User.Username() == "" {
		return "", errors.New("names no user")
	}
	return parsed.User.Username(), nil
}

func isPostgresURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") && u.Host != ""
}

func isHTTPURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}
