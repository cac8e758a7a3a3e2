package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/pkg/secret"
)

const (
	appURL   = "postgres://identity_app:app-password-123@127.0.0.1:5432/identity"
	ownerURL = "postgres://identity_owner:owner-password-456@127.0.0.1:5432/identity"
	kek      = "q6v0Yp0dW9qJf2Zb1yq7m2rTt1xJ0m3QWm1x9yH2b0Q="
	hash     = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func validEnv() map[string]string {
	return map[string]string{
		EnvDatabaseURL:         appURL,
		EnvMigrateDatabaseURL:  ownerURL,
		EnvKeyEncryptionKey:    kek,
		EnvPlatformCredentials: `[{"client_id":"connection","secret_sha256":"` + hash + `","kind":"svc","scopes":["tokens.exchange","tenants.status"]},{"client_id":"alice","secret_sha256":"` + hash + `","kind":"op","scopes":["platform.tenants.read"]}]`,
		EnvTokenTTL:            "7m",
		EnvLogLevel:            "debug",
	}
}

func TestFromEnv(t *testing.T) {
	c, err := FromEnv(env(validEnv()))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.GRPCAddr != DefaultGRPCAddr || c.HTTPAddr != DefaultHTTPAddr || c.TokenTTL != 7*time.Minute ||
		c.LogLevel != slog.LevelDebug || len(c.PlatformCredentials) != 2 || c.Issuer != DefaultIssuer {
		t.Fatalf("config %+v", c)
	}
	if role, err := AppRole(c.DatabaseURL); err != nil || role != "identity_app" {
		t.Fatalf("AppRole = %q, %v", role, err)
	}
}

func TestValidateRefuses(t *testing.T) {
	cases := map[string]func(m map[string]string){
		"no database":           func(m map[string]string) { delete(m, EnvDatabaseURL) },
		"database without user": func(m map[string]string) { m[EnvDatabaseURL] = "postgres://127.0.0.1/identity" },
		"not postgres":          func(m map[string]string) { m[EnvDatabaseURL] = "mysql://u:p@h/db" },
		"no KEK outside dev":    func(m map[string]string) { delete(m, EnvKeyEncryptionKey) },
		"TTL too short":         func(m map[string]string) { m[EnvTokenTTL] = "1m" },
		"TTL too long":          func(m map[string]string) { m[EnvTokenTTL] = "1h" },
		"bad address":           func(m map[string]string) { m[EnvGRPCAddr] = "7001" },
		"bad rate":              func(m map[string]string) { m[EnvRateLimit] = "0" },
		"status TTL too long":   func(m map[string]string) { m[EnvTenantStatusTTL] = "5m" },
		"unknown scope": func(m map[string]string) {
			m[EnvPlatformCredentials] = `[{"client_id":"x","secret_sha256":"` + hash + `","kind":"svc","scopes":["root"]}]`
		},
		"service with operator scope": func(m map[string]string) {
			m[EnvPlatformCredentials] = `[{"client_id":"x","secret_sha256":"` + hash + `","kind":"svc","scopes":["platform.tenants.manage"]}]`
		},
		"operator with service scope": func(m map[string]string) {
			m[EnvPlatformCredentials] = `[{"client_id":"x","secret_sha256":"` + hash + `","kind":"op","scopes":["credentials.read"]}]`
		},
		"bad hash": func(m map[string]string) {
			m[EnvPlatformCredentials] = `[{"client_id":"x","secret_sha256":"abc","kind":"svc","scopes":[]}]`
		},
		"bad kind": func(m map[string]string) {
			m[EnvPlatformCredentials] = `[{"client_id":"x","secret_sha256":"` + hash + `","kind":"user","scopes":[]}]`
		},
		"bad client id": func(m map[string]string) {
			m[EnvPlatformCredentials] = `[{"client_id":"svc:x","secret_sha256":"` + hash + `","kind":"svc","scopes":[]}]`
		},
		"duplicate client": func(m map[string]string) {
			one := `{"client_id":"x","secret_sha256":"` + hash + `","kind":"svc","scopes":[]}`
			m[EnvPlatformCredentials] = "[" + one + "," + one + "]"
		},
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			m := validEnv()
			mutate(m)
			c, err := FromEnv(env(m))
			if err == nil {
				err = c.Validate()
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, secret := range []string{"app-password-123", "owner-password-456", kek} {
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("error %q shows a secret", err)
				}
			}
		})
	}
	t.Run("unparsable values", func(t *testing.T) {
		for _, k := range []string{EnvTokenTTL, EnvRateLimit, EnvRateBurst, EnvLogLevel, EnvDev, EnvPlatformCredentials, EnvTenantStatusTTL} {
			m := validEnv()
			m[k] = "{nonsense"
			if _, err := FromEnv(env(m)); err == nil {
				t.Errorf("%s=%q accepted", k, m[k])
			}
		}
	})
	t.Run("dev allows a missing KEK", func(t *testing.T) {
		m := validEnv()
		delete(m, EnvKeyEncryptionKey)
		m[EnvDev] = "true"
		c, err := FromEnv(env(m))
		if err == nil {
			err = c.Validate()
		}
		if err != nil {
			t.Fatal(err)
		}
	})
}

// TestSecretsNeverPrint renders the configuration every way it could reach a log or a
// terminal and looks for the secrets.
func TestSecretsNeverPrint(t *testing.T) {
	c, err := FromEnv(env(validEnv()))
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("config", "config", c, "url", c.DatabaseURL)
	slog.New(slog.NewTextHandler(&logs, nil)).Info("config", "config", c, "kek", c.KeyEncryptionKey)
	js, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	renders := map[string]string{
		"%v": fmt.Sprintf("%v", c), "%+v": fmt.Sprintf("%+v", c), "%#v": fmt.Sprintf("%#v", c),
		"%s secret": fmt.Sprintf("%s", c.DatabaseURL), "json": string(js), "slog": logs.String(),
	}
	for how, out := range renders {
		for _, secret := range []string{"app-password-123", "owner-password-456", kek} {
			if strings.Contains(out, secret) {
				t.Errorf("%s rendering shows a secret: %s", how, out)
			}
		}
	}
	if !strings.Contains(logs.String(), "connection") || !strings.Contains(logs.String(), secret.Redacted) {
		t.Fatalf("log rendering lost its non-secret content: %s", logs.String())
	}
	if c.DatabaseURL.Reveal() != appURL {
		t.Fatal("Reveal does not return the value")
	}
}
