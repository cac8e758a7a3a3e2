package launch_test

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"

	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	"github.com/bulkhead/bulkhead/pkg/logging"
	"github.com/bulkhead/bulkhead/services/identity/identitytest"
	"github.com/bulkhead/bulkhead/services/identity/launch"
)

// syncBuffer is a bytes.Buffer safe for the server's concurrent log writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestNoSecretInLogs captures every log line (debug level) while a tenant is created, tokens
// are issued and exchanged, and credentials fail, and asserts no API key, platform secret,
// token or database password appears in them.
func TestNoSecretInLogs(t *testing.T) {
	var out syncBuffer
	logger := logging.NewJSON(&out, slog.LevelDebug)
	var cfg launch.Config
	id := identitytest.Start(t, identitytest.Options{Logger: logger, Configure: func(c *launch.Config) { cfg = *c }})
	c := newClients(t, id)

	created, err := c.tenants.CreateTenant(testCtx(t), &identityv1.CreateTenantRequest{Name: "Acme", OwnerEmail: "alice@acme.example", IdempotencyKey: "idem-secret-ish"})
	if err != nil {
		t.Fatal(err)
	}
	replay, err := c.tenants.CreateTenant(testCtx(t), &identityv1.CreateTenantRequest{Name: "Acme", OwnerEmail: "alice@acme.example", IdempotencyKey: "idem-secret-ish"})
	if err != nil {
		t.Fatal(err)
	}
	key := replay.GetApiKeySecret()
	token := id.Token(t, key)
	svcToken := id.ServiceToken(t, "connection", launch.Audience)
	exchanged, err := c.tokens.ExchangeToken(as(t, svcToken), &identityv1.ExchangeTokenRequest{SubjectToken: token, Audience: []string{"bulkhead.vault"}})
	if err != nil {
		t.Fatal(err)
	}
	// Failures are logged too; they must not echo what was presented.
	_, _ = c.tokens.IssueToken(testCtx(t), &identityv1.IssueTokenRequest{Credential: &identityv1.IssueTokenRequest_ApiKey{ApiKey: key + "x"}})
	_, _ = c.tenants.GetTenant(as(t, token+"x"), &identityv1.GetTenantRequest{TenantId: created.GetTenant().GetTenantId()})
	_, _ = c.tokens.ExchangeToken(as(t, svcToken), &identityv1.ExchangeTokenRequest{SubjectToken: token + "x", Audience: []string{"bulkhead.sync"}})

	logs := out.String()
	for _, want := range []string{"CreateTenant", "IssueToken", "ExchangeToken", "GetTenant"} {
		if !strings.Contains(logs, want) {
			t.Fatalf("no log line for %s; the capture is not working:\n%s", want, logs)
		}
	}
	secrets := map[string]string{
		"first API key":        created.GetApiKeySecret(),
		"rotated API key":      key,
		"API key secret part":  key[len(key)-20:],
		"user token":           token,
		"user token signature": token[strings.LastIndex(token, ".")+1:],
		"service token":        svcToken,
		"exchanged token":      exchanged.GetAccessToken(),
		"platform secret":      id.PlatformSecret("connection"),
		"operator secret":      id.PlatformSecret(identitytest.Operator),
		"key-encryption key":   cfg.KeyEncryptionKey.Reveal(),
		"database password":    "bulkhead-test",
	}
	for name, s := range secrets {
		if s == "" {
			t.Fatalf("%s is empty: the test would prove nothing", name)
		}
		if strings.Contains(logs, s) {
			t.Errorf("%s appears in the logs", name)
		}
	}
}
