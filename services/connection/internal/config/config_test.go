package config

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func valid() map[string]string {
	return map[string]string{
		EnvDatabaseURL:     "postgres://connection_app:db-pass@127.0.0.1:5432/b",
		EnvBrokerAddr:      "127.0.0.1:7003",
		EnvIdentityAddr:    "127.0.0.1:7001",
		EnvIdentityJWKSURL: "http://127.0.0.1:7080/.well-known/jwks.json",
		EnvClientSecret:    "svc-secret",
		EnvOAuthApps:       `{"github": {"client_id": "gh", "client_secret": "gh-secret"}}`,
	}
}

// TestSecretsNeverPrint: no way of printing a Config shows a secret.
func TestSecretsNeverPrint(t *testing.T) {
	c, err := FromEnv(env(valid()))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.OAuthApps["github"].ClientSecret.Reveal() != "gh-secret" {
		t.Fatal("OAuth app secret not read")
	}
	js, _ := json.Marshal(c)
	var logged strings.Builder
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("cfg", "config", c)
	for _, out := range []string{fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), string(js), logged.String()} {
		for _, secret := range []string{"db-pass", "svc-secret", "gh-secret"} {
			if strings.Contains(out, secret) {
				t.Fatalf("secret %q printed in %s", secret, out)
			}
		}
	}
}

func TestValidate(t *testing.T) {
	cases := map[string]func(m map[string]string){
		"no database":            func(m map[string]string) { delete(m, EnvDatabaseURL) },
		"no client secret":       func(m map[string]string) { delete(m, EnvClientSecret) },
		"broker not host:port":   func(m map[string]string) { m[EnvBrokerAddr] = "broker" },
		"return prefix w/o path": func(m map[string]string) { m[EnvReturnURLPrefixes] = "https://app.example.com" },
		"margin too long":        func(m map[string]string) { m[EnvRefreshMargin] = "2h" },
		"app without secret":     func(m map[string]string) { m[EnvOAuthApps] = `{"github": {"client_id": "gh"}}` },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			m := valid()
			mutate(m)
			c, err := FromEnv(env(m))
			if err == nil {
				err = c.Validate()
			}
			if err == nil {
				t.Fatal("accepted")
			}
		})
	}
	// A malformed OAuth apps value is refused without echoing it.
	m := valid()
	m[EnvOAuthApps] = `{"github": {"client_id": "gh", "client_secret": "leak-me", "extra": 1}}`
	if _, err := FromEnv(env(m)); err == nil || strings.Contains(err.Error(), "leak-me") {
		t.Fatalf("malformed OAuth apps: %v", err)
	}
}
