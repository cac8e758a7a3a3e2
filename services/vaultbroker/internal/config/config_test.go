package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func valid() map[string]string {
	return map[string]string{
		EnvDatabaseURL:      "postgres://vaultbroker_app:app-pass@127.0.0.1:5432/vb",
		EnvVaultAddr:        "http://127.0.0.1:8200",
		EnvProvisionerToken: "hvs.provisioner-secret",
		EnvIdentityAddr:     "127.0.0.1:7001",
		EnvIdentityJWKSURL:  "http://127.0.0.1:7080/.well-known/jwks.json",
		EnvClientSecret:     "client-secret-value",
	}
}

func TestFromEnvDefaultsAndValidate(t *testing.T) {
	c, err := FromEnv(env(valid()))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if c.GRPCAddr != DefaultGRPCAddr || c.VaultMode != "mount" || c.ClientID != "vaultbroker" || c.TenantStatusTTL != 2*time.Second {
		t.Fatalf("defaults: %+v", c)
	}
	if c.JWKSURLForVault() != c.IdentityJWKSURL {
		t.Fatalf("Vault JWKS URL %q, want identity's", c.JWKSURLForVault())
	}
	if role, err := AppRole(c.DatabaseURL); err != nil || role != "vaultbroker_app" {
		t.Fatalf("AppRole = %q, %v", role, err)
	}
}

func TestValidateNamesTheVariable(t *testing.T) {
	cases := []struct {
		name string
		set  map[string]string
		want string
	}{
		{"no database", map[string]string{EnvDatabaseURL: ""}, EnvDatabaseURL},
		{"not postgres", map[string]string{EnvDatabaseURL: "mysql://x"}, EnvDatabaseURL},
		{"no vault", map[string]string{EnvVaultAddr: ""}, EnvVaultAddr},
		{"no provisioner token", map[string]string{EnvProvisionerToken: ""}, EnvProvisionerToken},
		{"bad mode", map[string]string{EnvVaultMode: "namespaces"}, EnvVaultMode},
		{"namespace mode without parent", map[string]string{EnvVaultMode: "namespace"}, EnvNamespaceParent},
		{"bad token type", map[string]string{EnvVaultTokenType: "periodic"}, EnvVaultTokenType},
		{"no identity", map[string]string{EnvIdentityAddr: ""}, EnvIdentityAddr},
		{"no jwks", map[string]string{EnvIdentityJWKSURL: ""}, EnvIdentityJWKSURL},
		{"no client secret", map[string]string{EnvClientSecret: ""}, EnvClientSecret},
		{"bad client id", map[string]string{EnvClientID: "Vault Broker"}, EnvClientID},
		{"kill switch too slow", map[string]string{EnvTenantStatusTTL: "10m"}, EnvTenantStatusTTL},
		{"bad listen address", map[string]string{EnvGRPCAddr: "7003"}, EnvGRPCAddr},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := valid()
			for k, v := range tc.set {
				m[k] = v
			}
			c, err := FromEnv(env(m))
			if err == nil {
				err = c.Validate()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to name %s", err, tc.want)
			}
		})
	}
	if _, err := FromEnv(env(map[string]string{EnvTenantStatusTTL: "soon"})); err == nil {
		t.Fatal("unparsable duration accepted")
	}
}

// TestSecretsNeverPrint logs and prints a whole Config every way a service might.
func TestSecretsNeverPrint(t *testing.T) {
	m := valid()
	m[EnvAdminToken] = "hvs.admin-root-secret"
	m[EnvMigrateDatabaseURL] = "postgres://vaultbroker_owner:owner-pass@127.0.0.1/vb"
	c, err := FromEnv(env(m))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "config", c)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("config", "config", c)
	fmt.Fprintf(&buf, "%v %+v %#v %s", c, c, c, c.DatabaseURL)
	js, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	buf.Write(js)
	for _, secret := range []string{"app-pass", "owner-pass", "hvs.provisioner-secret", "hvs.admin-root-secret", "client-secret-value"} {
		if strings.Contains(buf.String(), secret) {
			t.Fatalf("secret %q printed:\n%s", secret, buf.String())
		}
	}
	if c.ClientSecret.Reveal() != "client-secret-value" {
		t.Fatal("Reveal lost the value")
	}
}
