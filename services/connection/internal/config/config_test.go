package config

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"
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
		"allow host with path":   func(m map[string]string) { m[EnvProxyAllowHosts] = "127.0.0.1:8080/x" },
		"negative proxy rate":    func(m map[string]string) { m[EnvProxyRate] = "-1" },
		"worker batch not int":   func(m map[string]string) { m[EnvWorkerBatch] = "many" },
		"worker disabled maybe":  func(m map[string]string) { m[EnvWorkerDisabled] = "maybe" },
		"negative interval":      func(m map[string]string) { m[EnvOffboardingInterval] = "-1s" },
		"give-up too short":      func(m map[string]string) { m[EnvRevocationGiveUp] = "30s" },
		"give-up not duration":   func(m map[string]string) { m[EnvRevocationGiveUp] = "3 days" },
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

// TestBackgroundAndProxySettings: the proxy, offboarding and worker settings are read from the
// environment; unset ones stay zero (the packages' defaults).
func TestBackgroundAndProxySettings(t *testing.T) {
	c, err := FromEnv(env(valid()))
	if err != nil {
		t.Fatal(err)
	}
	if c.ProxyRate != 0 || c.ProxyAllowHosts != nil || c.WorkerDisabled || c.WorkerInterval != 0 || c.OffboardingDisabled ||
		c.RevocationGiveUp != DefaultRevocationGiveUp {
		t.Fatalf("defaults: %+v", c)
	}
	m := valid()
	m[EnvProxyAllowHosts] = "10.0.0.5:8443, internal.example"
	m[EnvProxyRate], m[EnvProxyBurst] = "2.5", "7"
	m[EnvProxyBreakerFailures], m[EnvProxyBreakerOpen] = "3", "45s"
	m[EnvOffboardingDisabled], m[EnvOffboardingInterval] = "true", "10s"
	m[EnvWorkerDisabled], m[EnvWorkerInterval], m[EnvWorkerBatch] = "1", "1m", "50"
	m[EnvRevocationGiveUp] = "168h"
	c, err = FromEnv(env(m))
	if err == nil {
		err = c.Validate()
	}
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.ProxyAllowHosts, []string{"10.0.0.5:8443", "internal.example"}) || c.ProxyRate != 2.5 || c.ProxyBurst != 7 ||
		c.ProxyBreakerFailures != 3 || c.ProxyBreakerOpen != 45*time.Second ||
		!c.OffboardingDisabled || c.OffboardingInterval != 10*time.Second ||
		!c.WorkerDisabled || c.WorkerInterval != time.Minute || c.WorkerBatch != 50 || c.RevocationGiveUp != 168*time.Hour {
		t.Fatalf("read: %+v", c)
	}
}
