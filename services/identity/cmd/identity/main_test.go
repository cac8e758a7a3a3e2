package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	"github.com/bulkhead/bulkhead/pkg/testenv"
	"github.com/bulkhead/bulkhead/services/identity/migrations"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestBinary builds the identity binary and drives it as an operator would: `identity migrate`,
// then serving in development mode (generated KEK and operator credential), reflection listing
// the services, onboarding a tenant and issuing tokens with the printed credential, and a clean
// exit on SIGTERM.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "identity")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("go build: %v", err)
	}

	db := testenv.NewDatabase(t, testenv.DBSpec{Name: "identity", Migrations: migrations.FS})
	env := append(os.Environ(),
		"BULKHEAD_IDENTITY_DATABASE_URL="+db.AppURL,
		"BULKHEAD_IDENTITY_MIGRATE_DATABASE_URL="+db.OwnerURL,
		"BULKHEAD_IDENTITY_GRPC_ADDR=127.0.0.1:0",
		"BULKHEAD_IDENTITY_HTTP_ADDR=127.0.0.1:0",
		"BULKHEAD_DEV=true",
		"BULKHEAD_KEY_ENCRYPTION_KEY=",
		"BULKHEAD_PLATFORM_CREDENTIALS=",
	)

	migrate := exec.CommandContext(ctx, bin, "migrate")
	migrate.Env = env
	if out, err := migrate.CombinedOutput(); err != nil {
		t.Fatalf("identity migrate: %v\n%s", err, out)
	}

	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = env
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	// Read stderr until the start-up line; keep the dev credential printed before it.
	lines := bufio.NewScanner(stderr)
	credRE := regexp.MustCompile(`client_id=(\S+) client_secret=(\S+)`)
	var clientID, secret, grpcAddr, httpAddr string
	for grpcAddr == "" && lines.Scan() {
		line := lines.Text()
		if m := credRE.FindStringSubmatch(line); m != nil {
			clientID, secret = m[1], m[2]
			continue
		}
		var rec struct {
			Msg      string `json:"msg"`
			GRPCAddr string `json:"grpc_addr"`
			HTTPAddr string `json:"http_addr"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "identity started" {
			grpcAddr, httpAddr = rec.GRPCAddr, rec.HTTPAddr
		}
	}
	if grpcAddr == "" || secret == "" {
		t.Fatalf("identity did not start (addr %q, credential found %v)", grpcAddr, secret != "")
	}
	rest := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(stderr)
		rest <- string(b)
	}()

	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	// What `grpcurl -plaintext ADDR list` does.
	refl, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := refl.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := refl.Recv()
	if err != nil {
		t.Fatalf("reflection: %v", err)
	}
	_ = refl.CloseSend()
	var services []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		services = append(services, s.GetName())
	}
	if !strings.Contains(strings.Join(services, " "), "bulkhead.identity.v1.TenantService") {
		t.Fatalf("reflection lists %v", services)
	}

	tenants := identityv1.NewTenantServiceClient(conn)
	tokens := identityv1.NewTokenServiceClient(conn)
	created, err := tenants.CreateTenant(ctx, &identityv1.CreateTenantRequest{Name: "Acme", OwnerEmail: "alice@acme.example"})
	if err != nil {
		t.Fatalf("CreateTenant: %v", err)
	}
	if _, err := tokens.IssueToken(ctx, &identityv1.IssueTokenRequest{Credential: &identityv1.IssueTokenRequest_ApiKey{ApiKey: created.GetApiKeySecret()}}); err != nil {
		t.Fatalf("IssueToken: %v", err)
	}
	op, err := tokens.IssueToken(ctx, &identityv1.IssueTokenRequest{Credential: &identityv1.IssueTokenRequest_Platform{
		Platform: &identityv1.PlatformCredential{ClientId: clientID, ClientSecret: secret},
	}})
	if err != nil {
		t.Fatalf("IssueToken with the printed operator credential: %v", err)
	}
	opCtx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+op.GetAccessToken())
	list, err := tenants.ListTenants(opCtx, &identityv1.ListTenantsRequest{})
	if err != nil || len(list.GetTenants()) != 1 {
		t.Fatalf("ListTenants as operator: %v, %v", list, err)
	}

	for _, path := range []string{"/healthz", "/.well-known/jwks.json"} {
		r, err := http.Get("http://" + httpAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		_ = r.Body.Close()
		if r.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d", path, r.StatusCode)
		}
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, <-rest)
	}
	logs := <-rest
	if strings.Contains(logs, secret) || strings.Contains(logs, created.GetApiKeySecret()) {
		t.Fatal("a secret reached the logs")
	}
}
