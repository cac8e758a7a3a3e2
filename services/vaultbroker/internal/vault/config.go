// Package vault is the vault-broker's Vault layer: the per-tenant layout (provisioning and
// crypto-shredding), the per-tenant identities through which the broker reaches a tenant's
// secrets, and the credential and transit operations on top of them.
//
// Isolation does not rest on this code choosing the right path. Each tenant has its own policy
// granting exactly its own KV mount and transit key, and the broker obtains a token carrying
// only that policy by logging in to Vault's JWT auth with a token identity issued for that
// tenant (bound claim tid). A bug that asks for tenant B's path with tenant A's token gets 403
// from Vault itself.
//
// Two layouts: mount mode (open-source Vault; per-tenant KV mount, per-tenant key in a shared
// transit mount, per-tenant policy and JWT role) and namespace mode (Vault Enterprise, HCP
// Vault, OpenBao ≥ 2.3; one namespace per tenant holding the same pieces). Namespace mode is
// proved at start-up by Verify, never assumed: open-source Vault silently serves the root
// namespace for any X-Vault-Namespace header.
package vault

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// Mode selects the layout of tenants in Vault.
type Mode string

const (
	// ModeMount isolates tenants by mount and policy inside one namespace (open-source Vault).
	ModeMount Mode = "mount"
	// ModeNamespace gives each tenant its own namespace under Config.NamespaceParent.
	ModeNamespace Mode = "namespace"
)

// TokenType is the kind of Vault token the tenant JWT role issues.
type TokenType string

const (
	// TokenBatch tokens are not persisted by Vault and cost almost nothing to create; they
	// cannot be renewed, so the broker logs in again before expiry. The default.
	TokenBatch TokenType = "batch"
	// TokenService tokens are persisted (a storage write per login) and renewable; the broker
	// renews them with auth/token/renew-self until the role's max TTL, then logs in again.
	TokenService TokenType = "service"
)

// Fixed names of the layout. They are not configurable because deploy/vault/*.hcl (the
// provisioner's policy) is written against them.
const (
	// JWTAuthMount is the JWT auth method trusting identity's keys (root namespace in mount
	// mode, each tenant namespace in namespace mode).
	JWTAuthMount = "jwt-bulkhead"
	// KVMountPrefix prefixes each tenant's KV v2 mount in mount mode: bulkhead-kv/<tenant>.
	// The slash matters: it lets the provisioner's policy say bulkhead-kv/+/config.
	KVMountPrefix = "bulkhead-kv"
	// TransitMount is the transit mount: shared in mount mode (one key per tenant), per
	// namespace in namespace mode.
	TransitMount = "bulkhead-transit"
	// TenantPolicyPrefix prefixes each tenant's policy name in mount mode.
	TenantPolicyPrefix = "bulkhead-tenant-"
	// TenantRolePrefix prefixes each tenant's JWT role name in mount mode.
	TenantRolePrefix = "tenant-"
	// ProvisionerPolicyName is the policy Bootstrap writes for the provisioner credential.
	ProvisionerPolicyName = "bulkhead-provisioner"
	// DefaultAudience is the `aud` Vault requires in the tenant JWTs.
	DefaultAudience = "bulkhead.vault"
	// DefaultMaxSecretBytes bounds a credential's JSON encoding and a transit plaintext.
	DefaultMaxSecretBytes = 64 << 10
	// DefaultCacheSize holds a tenant token for every tenant of a large deployment.
	DefaultCacheSize = 16384
)

// JWTTrust is how Vault's JWT auth verifies the tenant JWTs identity issues. Exactly one of
// JWKSURL and ValidationPubKeys is set.
type JWTTrust struct {
	// JWKSURL is identity's JWKS endpoint, which Vault fetches and refreshes itself.
	JWKSURL string
	// JWKSCAPEM is the CA bundle for JWKSURL when it is not publicly trusted.
	JWKSCAPEM string
	// ValidationPubKeys are PEM public keys (tests, or deployments without a reachable JWKS).
	ValidationPubKeys []string
	// BoundIssuer is the `iss` Vault requires (identity's issuer).
	BoundIssuer string
	// Algorithms are the accepted signing algorithms; default ["EdDSA"] (identity signs with
	// Ed25519; Vault's JWT auth verifies EdDSA, checked against a real server in the tests).
	Algorithms []string
}

// Config configures the Vault layer. Zero durations and sizes take the documented defaults.
type Config struct {
	// Addr is Vault's base URL, e.g. https://vault.internal:8200.
	Addr string
	Mode Mode
	// NamespaceParent is the namespace holding tenant namespaces (namespace mode), e.g.
	// "bulkhead/tenants". Tenant T's namespace is NamespaceParent + "/" + T.
	NamespaceParent string
	// Audience is the `aud` the tenant roles require (default "bulkhead.vault").
	Audience string
	// Actor, when set, is the `act.sub` the tenant roles require (e.g. "svc:vaultbroker"):
	// only JWTs identity minted by token exchange *for the broker* log in. A JWT identity
	// issues to a service acting on its own (no actor) or exchanged by another service is
	// refused by Vault. Empty binds no actor.
	Actor string
	// Trust is written into the JWT auth method's config by Bootstrap (mount mode) and by
	// Provision in each tenant namespace (namespace mode).
	Trust JWTTrust
	// TokenType of tenant tokens (default batch).
	TokenType TokenType
	// TokenTTL and TokenMaxTTL of tenant tokens (defaults 10m and, for service tokens, 1h).
	TokenTTL    time.Duration
	TokenMaxTTL time.Duration
	// KVMaxVersions is how many versions of a credential the KV mount keeps (default 10).
	KVMaxVersions int
	// CacheSize bounds the tenant token cache (default 16384).
	CacheSize int
	// MaxSecretBytes bounds a credential's JSON encoding and a plaintext (default 64 KiB).
	MaxSecretBytes int
	// RequestTimeout bounds each Vault request (default 10s).
	RequestTimeout time.Duration
	// MaxRetries of a request on connection errors and 5xx (default 2; negative disables).
	MaxRetries int
	// HTTPClient is shared by every tenant's client so that 10,000 tenants share one
	// connection pool. Nil builds a pooled client (closed by Close). A client given here must
	// not follow redirects (CheckRedirect returning http.ErrUseLastResponse): vault-client-go
	// handles Vault's redirects itself.
	HTTPClient *http.Client
	Logger     *slog.Logger
	// Now is the clock for token refresh decisions; tests move it forward instead of
	// sleeping. Nil means time.Now.
	Now func() time.Time

	ownHTTPClient bool // HTTPClient was built by withDefaults, so Close may close it
}

// closeIdle releases pooled connections of a client this package built.
func (c *Config) closeIdle() {
	if c.ownHTTPClient {
		c.HTTPClient.CloseIdleConnections()
	}
}

// withDefaults validates c and fills in defaults.
func (c Config) withDefaults() (Config, error) {
	var errs []error
	c.Addr = strings.TrimRight(c.Addr, "/")
	if c.Addr == "" {
		errs = append(errs, errors.New("vault address is required"))
	}
	switch c.Mode {
	case ModeMount:
	case ModeNamespace:
		c.NamespaceParent = strings.Trim(c.NamespaceParent, "/")
		if c.NamespaceParent == "" {
			errs = append(errs, errors.New("namespace mode needs a namespace parent"))
		}
	default:
		errs = append(errs, fmt.Errorf("vault mode %q: want %q or %q", c.Mode, ModeMount, ModeNamespace))
	}
	if c.Audience == "" {
		c.Audience = DefaultAudience
	}
	if len(c.Trust.Algorithms) == 0 {
		c.Trust.Algorithms = []string{"EdDSA"}
	}
	if c.TokenType == "" {
		c.TokenType = TokenBatch
	}
	if c.TokenType != TokenBatch && c.TokenType != TokenService {
		errs = append(errs, fmt.Errorf("token type %q: want %q or %q", c.TokenType, TokenBatch, TokenService))
	}
	if c.TokenTTL <= 0 {
		c.TokenTTL = 10 * time.Minute
	}
	if c.TokenMaxTTL <= 0 {
		c.TokenMaxTTL = c.TokenTTL
		if c.TokenType == TokenService {
			c.TokenMaxTTL = max(time.Hour, c.TokenTTL)
		}
	}
	if c.TokenMaxTTL < c.TokenTTL {
		errs = append(errs, errors.New("token max TTL is shorter than token TTL"))
	}
	if c.TokenTTL%time.Second != 0 || c.TokenMaxTTL%time.Second != 0 {
		errs = append(errs, errors.New("token TTLs must be whole seconds"))
	}
	if c.KVMaxVersions <= 0 {
		c.KVMaxVersions = 10
	}
	if c.CacheSize <= 0 {
		c.CacheSize = DefaultCacheSize
	}
	if c.MaxSecretBytes <= 0 {
		c.MaxSecretBytes = DefaultMaxSecretBytes
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 10 * time.Second
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = 2
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.HTTPClient == nil {
		c.HTTPClient = newHTTPClient()
		c.ownHTTPClient = true
	}
	return c, errors.Join(errs...)
}

// newHTTPClient is a pooled client sized for one Vault cluster serving many tenants.
func newHTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = 256
	tr.MaxIdleConnsPerHost = 64
	tr.IdleConnTimeout = 90 * time.Second
	return &http.Client{
		Transport: tr,
		// vault-client-go follows Vault's redirects itself; net/http must hand them back.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
