package identityclient

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	"github.com/bulkhead/bulkhead/pkg/apierr"
)

func code(err error) codes.Code {
	st, _ := apierr.ToStatus(err)
	return st.Code()
}

// closedConn is a real gRPC client connection to a loopback port nothing listens on: identity
// down, as a service sees it.
func closedConn(t *testing.T) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	if err := lis.Close(); err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func TestNewChecksConfig(t *testing.T) {
	conn := closedConn(t)
	cases := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"complete", Config{Conn: conn, ClientID: "svc", ClientSecret: "s"}, true},
		{"no connection", Config{ClientID: "svc", ClientSecret: "s"}, false},
		{"no client id", Config{Conn: conn, ClientSecret: "s"}, false},
		{"no client secret", Config{Conn: conn, ClientID: "svc"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg); (err == nil) != tc.ok {
				t.Fatalf("New: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// TestDefaults: the service token's audience defaults to identity alone, and a caller's slice
// is copied so changing it later cannot widen the token.
func TestDefaults(t *testing.T) {
	conn := closedConn(t)
	c, err := New(Config{Conn: conn, ClientID: "svc", ClientSecret: "s"})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.audience) != 1 || c.audience[0] != AudienceIdentity || c.timeout != 5*time.Second || c.now == nil {
		t.Fatalf("defaults: audience %v, timeout %v", c.audience, c.timeout)
	}
	aud := []string{AudienceIdentity, "bulkhead.vaultbroker"}
	c, err = New(Config{Conn: conn, ClientID: "svc", ClientSecret: "s", Audience: aud})
	if err != nil {
		t.Fatal(err)
	}
	aud[1] = "bulkhead.sync"
	if c.audience[1] != "bulkhead.vaultbroker" {
		t.Fatalf("audience follows the caller's slice: %v", c.audience)
	}
}

// TestCallErrorMapping: what each answer of identity becomes for the service's caller.
func TestCallErrorMapping(t *testing.T) {
	suspended := apierr.TenantSuspended().GRPCStatus().Err()
	otherDenied := apierr.PermissionDenied("scope missing").GRPCStatus().Err()
	cases := []struct {
		name     string
		notFound string
		err      error
		want     codes.Code
		reason   string
	}{
		{"identity unavailable", "", status.Error(codes.Unavailable, "down"), codes.Unavailable, ""},
		{"identity too slow", "", status.Error(codes.DeadlineExceeded, "slow"), codes.Unavailable, ""},
		{"identity overloaded", "", status.Error(codes.ResourceExhausted, "busy"), codes.Unavailable, ""},
		{"tenant suspended", "", suspended, codes.PermissionDenied, apierr.ReasonTenantSuspended},
		{"other permission denied is ours", "", otherDenied, codes.Internal, ""},
		{"credential refused is ours", "", status.Error(codes.Unauthenticated, "bad secret"), codes.Internal, ""},
		{"not found, no resource configured", "", status.Error(codes.NotFound, "user"), codes.Internal, ""},
		{"not found, resource configured", "user", status.Error(codes.NotFound, "user"), codes.NotFound, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := &Client{notFound: tc.notFound}
			err := c.callError("op", tc.err)
			if got := code(err); got != tc.want {
				t.Fatalf("code %v, want %v (%v)", got, tc.want, err)
			}
			if tc.reason != "" && !apierr.Is(err, tc.reason) {
				t.Fatalf("reason of %v, want %s", err, tc.reason)
			}
			if !errors.Is(err, tc.err) {
				t.Fatalf("%v does not wrap identity's answer", err)
			}
		})
	}
	// The caller's own cancellation passes through unchanged: it is not identity's failure.
	c := &Client{}
	if err := c.callError("op", context.Canceled); err != context.Canceled {
		t.Fatalf("canceled became %v", err)
	}
}

// TestIdentityDown: every call answers Unavailable when identity cannot be reached.
func TestIdentityDown(t *testing.T) {
	c, err := New(Config{Conn: closedConn(t), ClientID: "svc", ClientSecret: "s", CallTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.ServiceToken(ctx); code(err) != codes.Unavailable {
		t.Fatalf("ServiceToken: %v, want Unavailable", err)
	}
	if _, err := c.TenantState(ctx, "7c0c3a0e-2d1b-4f4e-9a55-3f6f1b0f5a10"); code(err) != codes.Unavailable {
		t.Fatalf("TenantActive: %v, want Unavailable", err)
	}
	if _, err := c.Exchange(ctx, "exchange", &identityv1.ExchangeTokenRequest{}); code(err) != codes.Unavailable {
		t.Fatalf("Exchange: %v, want Unavailable", err)
	}
	if s := c.Stats(); s != (Stats{}) {
		t.Fatalf("stats count failed calls: %+v", s)
	}
}
