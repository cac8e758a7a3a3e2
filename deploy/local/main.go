// Command local runs the whole Bulkhead suite on one machine with embedded defaults: it starts
// its own PostgreSQL (unless BULKHEAD_DATABASE_URL names a superuser URL of an existing server)
// and its own Vault (unless VAULT_ADDR and VAULT_TOKEN are set),
// creates one database and a pair of roles per service (an owner that migrates, an app role
// that owns nothing and lacks BYPASSRLS), starts every service in-process on loopback, and
// prints the addresses, the operator credential and a ready-to-paste grpcurl call.
//
// It is the `make run` target. It is for development: the data directory lives in the user
// cache, the key-encryption key is generated per run (tokens do not survive a restart), and
// service credentials are minted fresh each run.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/bulkhead/bulkhead/pkg/authz"
	"github.com/bulkhead/bulkhead/pkg/logging"
	"github.com/bulkhead/bulkhead/pkg/pglocal"
	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/pkg/vaultlocal"
	connection "github.com/bulkhead/bulkhead/services/connection/launch"
	identity "github.com/bulkhead/bulkhead/services/identity/launch"
	syncsvc "github.com/bulkhead/bulkhead/services/sync/launch"
	broker "github.com/bulkhead/bulkhead/services/vaultbroker/launch"
)

const envDatabaseURL = "BULKHEAD_DATABASE_URL"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bulkhead:", err)
		os.Exit(1)
	}
}

type options struct {
	dataDir      string
	identityGRPC string
	identityHTTP string
	brokerGRPC   string
	connGRPC     string
	connHTTP     string
	syncGRPC     string
	prepare      bool
	logLevel     string
}

func run() error {
	var o options
	flag.StringVar(&o.dataDir, "data", defaultDataDir(), "directory for the embedded PostgreSQL cluster (kept between runs)")
	flag.StringVar(&o.identityGRPC, "identity-grpc", "127.0.0.1:7001", "identity gRPC listen address")
	flag.StringVar(&o.identityHTTP, "identity-http", "127.0.0.1:7080", "identity HTTP (JWKS) listen address")
	flag.StringVar(&o.brokerGRPC, "vaultbroker-grpc", "127.0.0.1:7003", "vault-broker gRPC listen address")
	flag.StringVar(&o.connGRPC, "connection-grpc", "127.0.0.1:7002", "connection gRPC listen address")
	flag.StringVar(&o.connHTTP, "connection-http", "127.0.0.1:7082", "connection HTTP (OAuth2 callback) listen address")
	flag.StringVar(&o.syncGRPC, "sync-grpc", "127.0.0.1:7004", "sync gRPC listen address")
	flag.BoolVar(&o.prepare, "prepare", false, "only find (or build once) the Vault server, print its path and exit")
	flag.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	flag.Parse()

	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	logger := logging.NewJSON(os.Stderr, level)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if o.prepare {
		path, err := vaultlocal.FindBinary(ctx, logger)
		if err != nil {
			return fmt.Errorf("vault: %w", err)
		}
		fmt.Println(path)
		return nil
	}

	// Closers run in reverse order so a half-built suite tears itself down.
	var closers []func()
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}()

	superURL := os.Getenv(envDatabaseURL)
	if superURL == "" {
		if err := os.MkdirAll(o.dataDir, 0o755); err != nil {
			return err
		}
		srv, err := pglocal.Start(ctx, pglocal.Options{Dir: o.dataDir, Logger: logger})
		if err != nil {
			return fmt.Errorf("embedded PostgreSQL: %w", err)
		}
		closers = append(closers, func() { _ = srv.Stop() })
		superURL = srv.URL("postgres")
		logger.Info("embedded PostgreSQL started", "dir", o.dataDir, "port", srv.Port())
	}

	// Vault: VAULT_ADDR + VAULT_TOKEN when given, else a dev server (a vault or bao binary on
	// PATH, or HashiCorp Vault built once from the Go module proxy into the user cache).
	vlt, err := vaultlocal.Start(ctx, vaultlocal.Options{Logger: logger, AuditDir: filepath.Join(o.dataDir, "vault-audit")})
	if err != nil {
		return fmt.Errorf("vault: %w", err)
	}
	closers = append(closers, func() { _ = vlt.Stop() })

	// Platform credentials: one per Bulkhead service and one operator, fresh each run.
	operator, operatorSecret, err := identity.NewPlatformCredential(identity.KindOperator, "operator", authz.PlatformTenantsRead, authz.PlatformTenantsManage)
	if err != nil {
		return err
	}
	brokerCred, brokerSecret, err := identity.NewPlatformCredential(identity.KindService, "vaultbroker", authz.TokensExchange, authz.TenantsStatus)
	if err != nil {
		return err
	}

	connCred, connSecret, err := identity.NewPlatformCredential(identity.KindService, "connection",
		authz.TokensExchange, authz.TenantsStatus, authz.CredentialsRead, authz.CredentialsWrite, authz.EventsRead, authz.TenantsOffboard)
	if err != nil {
		return err
	}

	// sync's background runs act as svc:sync within a tenant: connections.use for the
	// connection service's GetAccessToken; credentials.read as the broker's tests grant it;
	// events.read for its consumer of the connection service's events.
	syncCred, syncSecret, err := identity.NewPlatformCredential(identity.KindService, "sync",
		authz.TokensExchange, authz.TenantsStatus, authz.CredentialsRead, authz.ConnectionsUse, authz.EventsRead)
	if err != nil {
		return err
	}

	idDB, err := serviceDatabase(ctx, superURL, "identity")
	if err != nil {
		return err
	}
	cfg := identity.DefaultConfig()
	cfg.GRPCAddr, cfg.HTTPAddr = o.identityGRPC, o.identityHTTP
	cfg.DatabaseURL, cfg.MigrateDatabaseURL = identity.Secret(idDB.app), identity.Secret(idDB.owner)
	cfg.LogLevel = level
	cfg.PlatformCredentials = []identity.PlatformCredential{operator, brokerCred, connCred, syncCred}
	// Dev mode generates the key-encryption key. The data directory is kept between runs; with
	// a fresh dev key identity rotates to a new signing key instead of failing to open the old.
	cfg.Dev = true
	id, err := identity.Start(ctx, cfg, identity.Options{Logger: logger.With("service", "identity"), DevOutput: os.Stdout, DeferLifecycle: true})
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	closers = append(closers, func() { _ = id.Close() })

	brDB, err := serviceDatabase(ctx, superURL, "vaultbroker")
	if err != nil {
		return err
	}
	bcfg := broker.DefaultConfig()
	bcfg.GRPCAddr = o.brokerGRPC
	bcfg.DatabaseURL, bcfg.MigrateDatabaseURL = broker.Secret(brDB.app), broker.Secret(brDB.owner)
	bcfg.VaultAddr = vlt.Addr()
	bcfg.IdentityAddr, bcfg.IdentityJWKSURL, bcfg.Issuer = id.GRPCAddr, id.JWKSURL, id.Issuer
	bcfg.ClientID, bcfg.ClientSecret = brokerCred.ClientID, broker.Secret(brokerSecret)
	bcfg.LogLevel = level
	prov, err := broker.DevProvisionerToken(ctx, bcfg, vlt.RootToken())
	if err != nil {
		return fmt.Errorf("vault-broker: %w", err)
	}
	bcfg.ProvisionerToken = broker.Secret(prov)
	br, err := broker.Start(ctx, bcfg, broker.Options{Logger: logger.With("service", "vaultbroker")})
	if err != nil {
		return fmt.Errorf("vault-broker: %w", err)
	}
	closers = append(closers, func() { _ = br.Close() })

	cnDB, err := serviceDatabase(ctx, superURL, "connection")
	if err != nil {
		return err
	}
	ccfg := connection.DefaultConfig()
	ccfg.GRPCAddr, ccfg.HTTPAddr = o.connGRPC, o.connHTTP
	ccfg.DatabaseURL, ccfg.MigrateDatabaseURL = connection.Secret(cnDB.app), connection.Secret(cnDB.owner)
	ccfg.BrokerAddr = br.GRPCAddr
	ccfg.IdentityAddr, ccfg.IdentityJWKSURL, ccfg.Issuer = id.GRPCAddr, id.JWKSURL, id.Issuer
	ccfg.ClientID, ccfg.ClientSecret = connCred.ClientID, connection.Secret(connSecret)
	ccfg.LogLevel = level
	cn, err := connection.Start(ctx, ccfg, connection.Options{Logger: logger.With("service", "connection")})
	if err != nil {
		return fmt.Errorf("connection: %w", err)
	}
	closers = append(closers, func() { _ = cn.Close() })

	snDB, err := serviceDatabase(ctx, superURL, "sync")
	if err != nil {
		return err
	}
	hashKey, err := persistentKey(filepath.Join(o.dataDir, "sync-record-hash-key"))
	if err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	scfg := syncsvc.DefaultConfig()
	scfg.GRPCAddr = o.syncGRPC
	scfg.DatabaseURL, scfg.MigrateDatabaseURL = syncsvc.Secret(snDB.app), syncsvc.Secret(snDB.owner)
	scfg.AppRole = "sync_app"
	scfg.IdentityAddr, scfg.IdentityJWKSURL, scfg.Issuer = id.GRPCAddr, id.JWKSURL, id.Issuer
	scfg.ClientID, scfg.ClientSecret = syncCred.ClientID, syncsvc.Secret(syncSecret)
	scfg.ConnectionAddr, scfg.BrokerAddr, scfg.RecordHashKey = cn.GRPCAddr, br.GRPCAddr, syncsvc.Secret(hashKey)
	sn, err := syncsvc.Start(ctx, scfg, syncsvc.Options{Logger: logger.With("service", "sync")})
	if err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	closers = append(closers, func() { _ = sn.Close() })
	// The tenant lifecycle saga starts once its participants listen: new tenants are
	// provisioned in Vault, deleted ones offboarded.
	err = id.StartLifecycle(identity.LifecycleTargets{VaultBrokerAddr: br.GRPCAddr, ConnectionAddr: cn.GRPCAddr, SyncAddr: sn.GRPCAddr})
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}

	fmt.Printf(`
Bulkhead is running.
  identity      gRPC %s   JWKS http://%s/.well-known/jwks.json
  vault-broker  gRPC %s   (vault mode: %s; Vault %s)
  connection    gRPC %s   OAuth2 callback %s
  sync          gRPC %s
  operator      client_id=%s client_secret=%s   (shown once)

Try it (grpcurl: 'make tools' puts it in .cache/bin):
  grpcurl -plaintext %s list
  grpcurl -plaintext -d '{"name":"Acme","owner_email":"owner@acme.example","idempotency_key":"acme-1"}' \
    %s bulkhead.identity.v1.TenantService/CreateTenant
  grpcurl -plaintext -d '{"api_key":"<api_key_secret from above>"}' \
    %s bulkhead.identity.v1.TokenService/IssueToken
  The tenant is provisioned in Vault before CreateTenant answers (tenant.lifecycle). Deleting it
  runs the offboarding saga — revoke connections, purge synced data, delete its Vault layout:
  grpcurl -plaintext -H 'authorization: Bearer <access_token>' -d '{"tenant_id":"<tenant_id>"}' \
    %s bulkhead.identity.v1.TenantService/DeleteTenant

Ctrl-C stops everything.
`, id.GRPCAddr, id.HTTPAddr, br.GRPCAddr, br.Mode, vlt.Addr(), cn.GRPCAddr, cn.CallbackURL, sn.GRPCAddr, operator.ClientID, operatorSecret,
		id.GRPCAddr, id.GRPCAddr, id.GRPCAddr, id.GRPCAddr)

	select {
	case <-ctx.Done():
		logger.Info("shutting down")
		return nil
	case <-id.Done():
		return errors.Join(errors.New("identity stopped"), id.Wait())
	case <-br.Done():
		return errors.Join(errors.New("vault-broker stopped"), br.Wait())
	case <-cn.Done():
		return errors.Join(errors.New("connection stopped"), cn.Wait())
	case <-sn.Done():
		return errors.Join(errors.New("sync stopped"), sn.Wait())
	}
}

// defaultDataDir keeps the embedded cluster in the user cache. As root, PostgreSQL runs as the
// postgres OS user, which cannot enter /root: use /var/tmp instead.
func defaultDataDir() string {
	if os.Geteuid() == 0 {
		return filepath.Join("/var/tmp", "bulkhead", "run")
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	return filepath.Join(cache, "bulkhead", "run")
}

// databaseURLs are the two connection strings of a service's database.
type databaseURLs struct{ owner, app string }

// serviceDatabase creates (idempotently) the roles and database of one service and returns the
// owner's and the app role's URLs. The password is fixed per run because the roles are
// re-applied each start; it only guards a loopback development server.
func serviceDatabase(ctx context.Context, superURL, name string) (databaseURLs, error) {
	roles := pgtenant.Roles{Owner: name + "_owner", App: name + "_app", Password: "bulkhead-dev-" + name}
	if err := pgtenant.EnsureRoles(ctx, superURL, roles); err != nil {
		return databaseURLs{}, fmt.Errorf("%s roles: %w", name, err)
	}
	if err := pgtenant.CreateDatabase(ctx, superURL, name, roles.Owner); err != nil {
		return databaseURLs{}, fmt.Errorf("%s database: %w", name, err)
	}
	u, err := url.Parse(superURL)
	if err != nil {
		return databaseURLs{}, err
	}
	u.Path = "/" + name
	u.User = url.UserPassword(roles.Owner, roles.Password)
	owner := u.String()
	u.User = url.UserPassword(roles.App, roles.Password)
	return databaseURLs{owner: owner, app: u.String()}, nil
}

// persistentKey returns the key kept in path, creating a random one the first time. The sync
// service's record hash key must outlive a restart (the database does): a new key would make
// the next runs rewrite every record with sensitive fields.
func persistentKey(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil && len(b) >= 32 {
		return string(b), nil
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	key := fmt.Sprintf("%x", b)
	if err := os.WriteFile(path, []byte(key), 0o600); err != nil {
		return "", fmt.Errorf("record hash key: %w", err)
	}
	return key, nil
}
