package main

import (
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/bulkhead/bulkhead/pkg/testenv"
	"github.com/bulkhead/bulkhead/pkg/vaultlocal"
	"github.com/bulkhead/bulkhead/services/identity/identitytest"
	"github.com/bulkhead/bulkhead/services/vaultbroker/brokertest"
	"github.com/bulkhead/bulkhead/services/vaultbroker/migrations"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// syncBuffer is an io.Writer safe for the server's goroutines and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func baseEnv(db *testenv.Database, vaultAddr, token string) map[string]string {
	return map[string]string{
		"BULKHEAD_VAULTBROKER_DATABASE_URL":         db.AppURL,
		"BULKHEAD_VAULTBROKER_MIGRATE_DATABASE_URL": db.OwnerURL,
		"VAULT_ADDR":                         vaultAddr,
		"BULKHEAD_VAULT_PROVISIONER_TOKEN":   token,
		"BULKHEAD_IDENTITY_ADDR":             "127.0.0.1:1",
		"BULKHEAD_IDENTITY_JWKS_URL":         "http://127.0.0.1:1/.well-known/jwks.json",
		"BULKHEAD_VAULTBROKER_CLIENT_SECRET": "unused",
		"BULKHEAD_VAULTBROKER_GRPC_ADDR":     "127.0.0.1:0",
	}
}

func TestRunExitCodes(t *testing.T) {
	srv := testenv.Vault(t)
	db := testenv.NewDatabase(t, testenv.DBSpec{Name: "vaultbroker", Migrations: migrations.FS})
	namespaces := testenv.VaultCapabilities(t).Namespaces
	cases := []struct {
		name     string
		set      map[string]string
		args     []string
		want     int
		contains string
	}{
		{"invalid configuration", map[string]string{"VAULT_ADDR": ""}, nil, 2, "VAULT_ADDR"},
		{"unknown argument", nil, []string{"serve"}, 2, "usage"},
		{"migrate", nil, []string{"migrate"}, 0, "migrations applied"},
		{"namespace mode without namespaces", map[string]string{"BULKHEAD_VAULT_MODE": "namespace", "BULKHEAD_VAULT_NAMESPACE_PARENT": "bulkhead/tenants"}, nil, 1, "refusing to start"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.want == 1 && namespaces {
				t.Skip("the shared Vault has namespaces")
			}
			env := baseEnv(db, srv.Addr(), srv.RootToken())
			for k, v := range tc.set {
				env[k] = v
			}
			var out syncBuffer
			got := run(context.Background(), tc.args, func(k string) string { return env[k] }, &out)
			if got != tc.want || !strings.Contains(out.String(), tc.contains) {
				t.Fatalf("exit %d, want %d; output:\n%s", got, tc.want, out.String())
			}
		})
	}
}

// TestRunServesAndStops runs the command as a deployment would (environment only, with the
// development bootstrap through BULKHEAD_VAULT_ADMIN_TOKEN) until it answers health checks,
// then delivers the shutdown signal and expects a clean exit.
func TestRunServesAndStops(t *testing.T) {
	id := identitytest.Start(t, identitytest.Options{Services: brokertest.Services})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv, err := vaultlocal.Start(ctx, vaultlocal.Options{IgnoreEnv: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	db := testenv.NewDatabase(t, testenv.DBSpec{Name: "vaultbroker", Migrations: migrations.FS})
	addr := freeAddr(t)
	env := baseEnv(db, srv.Addr(), srv.RootToken())
	env["BULKHEAD_VAULT_ADMIN_TOKEN"] = srv.RootToken()
	env["BULKHEAD_IDENTITY_ADDR"] = id.GRPCAddr
	env["BULKHEAD_IDENTITY_JWKS_URL"] = id.JWKSURL
	env["BULKHEAD_VAULTBROKER_CLIENT_SECRET"] = id.PlatformSecret(brokertest.ClientID)
	env["BULKHEAD_VAULTBROKER_GRPC_ADDR"] = addr

	runCtx, stop := context.WithCancel(context.Background())
	defer stop()
	var out syncBuffer
	exit := make(chan int, 1)
	go func() { exit <- run(runCtx, nil, func(k string) string { return env[k] }, &out) }()

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(time.Minute)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			break
		}
		select {
		case code := <-exit:
			t.Fatalf("exited early with %d:\n%s", code, out.String())
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not serving after a minute:\n%s", out.String())
		}
	}
	stop() // SIGTERM
	if code := <-exit; code != 0 {
		t.Fatalf("exit %d after shutdown:\n%s", code, out.String())
	}
	for _, secret := range []string{srv.RootToken(), id.PlatformSecret(brokertest.ClientID)} {
		if strings.Contains(out.String(), secret) {
			t.Fatal("a secret was logged")
		}
	}
	if !strings.Contains(out.String(), "vault bootstrapped") || !strings.Contains(out.String(), `"vault_mode":"mount"`) {
		t.Fatalf("log lacks the bootstrap or the mode:\n%s", out.String())
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}
