package grpcclient_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/bulkhead/bulkhead/pkg/authn"
	"github.com/bulkhead/bulkhead/pkg/authn/authntest"
	"github.com/bulkhead/bulkhead/pkg/authz"
	"github.com/bulkhead/bulkhead/pkg/claims"
	"github.com/bulkhead/bulkhead/pkg/grpcclient"
	"github.com/bulkhead/bulkhead/pkg/grpcserver"
	"github.com/bulkhead/bulkhead/pkg/logging"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	audA    = "bulkhead.a"
	audB    = "bulkhead.b"
	tenant  = "0c5e7a3a-9b1d-4e2f-8a6b-1c2d3e4f5a01"
	mUnary  = "/grpc.testing.TestService/UnaryCall"
	mEmpty  = "/grpc.testing.TestService/EmptyCall"
	mStream = "/grpc.testing.TestService/StreamingOutputCall"
)

// serviceB reports what it saw: subject in Username, tenant in OauthScope, caller in Hostname.
type serviceB struct {
	testpb.UnimplementedTestServiceServer
	calls atomic.Int64
	mu    sync.Mutex
	seen  *claims.Claims
}

func (b *serviceB) UnaryCall(ctx context.Context, _ *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	b.calls.Add(1)
	c, _ := claims.FromContext(ctx)
	return &testpb.SimpleResponse{Username: c.SubjectString(), OauthScope: c.TenantID, Hostname: c.Caller}, nil
}

func (b *serviceB) EmptyCall(ctx context.Context, _ *testpb.Empty) (*testpb.Empty, error) {
	b.calls.Add(1)
	c, _ := claims.FromContext(ctx)
	b.mu.Lock()
	b.seen = c
	b.mu.Unlock()
	return &testpb.Empty{}, nil
}

func (b *serviceB) StreamingOutputCall(_ *testpb.StreamingOutputCallRequest, s grpc.ServerStreamingServer[testpb.StreamingOutputCallResponse]) error {
	c, _ := claims.FromContext(s.Context())
	return s.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: []byte(c.TenantID + "|" + c.Caller)}})
}

// serviceA forwards to B: UnaryCall with the incoming principal; EmptyCall from a context with
// no principal, i.e. as background work would.
type serviceA struct {
	testpb.UnimplementedTestServiceServer
	b testpb.TestServiceClient
}

func (a *serviceA) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	if req.GetFillUsername() { // "drop the principal" switch for the fail-closed test
		ctx = context.Background()
	}
	return a.b.UnaryCall(ctx, req)
}

func (a *serviceA) EmptyCall(_ context.Context, req *testpb.Empty) (*testpb.Empty, error) {
	return a.b.EmptyCall(context.Background(), req)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// serve runs svc behind the full chain for audience on a loopback port and returns its address.
func serve(t *testing.T, iss *authntest.Issuer, audience string, policy authz.Policy, svc testpb.TestServiceServer, logs *syncBuffer) string {
	t.Helper()
	set := iss.PublicSet()
	v, err := authn.NewVerifier(authn.VerifierConfig{
		Issuer: authntest.DefaultIssuer, Audience: audience,
		Keys:    authn.KeyFunc(func(context.Context) (jwk.Set, error) { return set, nil }),
		Tenants: authn.TenantStatusFunc(func(_ context.Context, id string) (bool, error) { return id == tenant, nil }),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := grpcserver.New(grpcserver.Config{Logger: logging.NewJSON(logs, slog.LevelInfo), Verifier: v, Policy: policy})
	if err != nil {
		t.Fatal(err)
	}
	testpb.RegisterTestServiceServer(srv, svc)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

type chainEnv struct {
	iss    *authntest.Issuer
	b      *serviceB
	bLogs  *syncBuffer
	a      testpb.TestServiceClient
	bAddr  string
	svcTok grpcclient.TokenSource
}

// twoHops starts B, then A calling B through grpcclient with A's own service token, and returns
// a plain client for A.
func twoHops(t *testing.T) *chainEnv {
	t.Helper()
	e := &chainEnv{iss: authntest.NewIssuer(t), b: &serviceB{}, bLogs: &syncBuffer{}}
	e.bAddr = serve(t, e.iss, audB, authz.Policy{
		mUnary:  {Permission: authz.RecordsRead, Services: []string{"a"}},
		mStream: {Permission: authz.RecordsRead},
		mEmpty:  {Kinds: []claims.Kind{claims.KindService}, Services: []string{"a"}, NoTenant: true},
	}, e.b, e.bLogs)
	e.svcTok = grpcclient.TokenSourceFunc(func(context.Context) (string, error) {
		return e.iss.Mint(authntest.Token{Subject: "svc:a", Audience: []string{audB}})
	})
	toB, err := grpcclient.Dial(e.bAddr, grpcclient.Options{ServiceToken: e.svcTok, NoTenantMethods: []string{mEmpty}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = toB.Close() })
	aAddr := serve(t, e.iss, audA, authz.Policy{
		mUnary: {Permission: authz.RecordsRead},
		mEmpty: {Public: true},
	}, &serviceA{b: testpb.NewTestServiceClient(toB)}, &syncBuffer{})
	conn, err := grpc.NewClient(aAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	e.a = testpb.NewTestServiceClient(conn)
	return e
}

func TestTwoHopsKeepTenantAndSubject(t *testing.T) {
	e := twoHops(t)
	userID := uuid.NewString()
	// One token for both hops: identity lists every service the call chain will reach in aud.
	tok := e.iss.MustMint(t, authntest.Token{Subject: "user:" + userID, TenantID: tenant, Audience: []string{audA, audB}, Roles: []string{"viewer"}})
	ctx := metadata.AppendToOutgoingContext(context.Background(), grpcserver.MDAuthorization, "Bearer "+tok, grpcserver.MDRequestID, "hop-req-1")

	resp, err := e.a.UnaryCall(ctx, &testpb.SimpleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetUsername() != "user:"+userID || resp.GetOauthScope() != tenant || resp.GetHostname() != "svc:a" {
		t.Fatalf("B saw subject %q tenant %q caller %q; want user:%s, %s, svc:a", resp.GetUsername(), resp.GetOauthScope(), resp.GetHostname(), userID, tenant)
	}
	if !strings.Contains(e.bLogs.String(), `"request_id":"hop-req-1"`) {
		t.Fatalf("request id did not reach B's logs:\n%s", e.bLogs.String())
	}
}

func TestNoTenantPrincipalFailsBeforeSending(t *testing.T) {
	e := twoHops(t)
	tok := e.iss.MustMint(t, authntest.Token{Subject: "user:" + uuid.NewString(), TenantID: tenant, Audience: []string{audA, audB}, Roles: []string{"viewer"}})
	ctx := metadata.AppendToOutgoingContext(context.Background(), grpcserver.MDAuthorization, "Bearer "+tok)
	before := e.b.calls.Load()
	_, err := e.a.UnaryCall(ctx, &testpb.SimpleRequest{FillUsername: true}) // A drops the principal
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("code %v, want FailedPrecondition (%v)", status.Code(err), err)
	}
	if e.b.calls.Load() != before {
		t.Fatal("B was called although the call had no tenant principal")
	}
}

func TestNoTenantMethodActsAsService(t *testing.T) {
	e := twoHops(t)
	if _, err := e.a.EmptyCall(context.Background(), &testpb.Empty{}); err != nil {
		t.Fatal(err)
	}
	e.b.mu.Lock()
	seen := e.b.seen
	e.b.mu.Unlock()
	if seen == nil || seen.SubjectString() != "svc:a" || seen.TenantID != "" || seen.Caller != "svc:a" {
		t.Fatalf("B saw %+v, want principal and caller svc:a with no tenant", seen)
	}
}

func TestActAsOnStreams(t *testing.T) {
	e := twoHops(t)
	conn, err := grpcclient.Dial(e.bAddr, grpcclient.Options{ServiceToken: e.svcTok})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	b := testpb.NewTestServiceClient(conn)
	tok := e.iss.MustMint(t, authntest.Token{Subject: "sa:" + uuid.NewString(), TenantID: tenant, Audience: []string{audB}, Scope: "records.read"})

	s, err := b.StreamingOutputCall(grpcclient.ActAs(context.Background(), tenant, tok), &testpb.StreamingOutputCallRequest{})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if got := string(msg.GetPayload().GetBody()); got != tenant+"|svc:a" {
		t.Fatalf("stream saw %q", got)
	}
	// Without a principal the stream is refused before it opens.
	_, err = b.StreamingOutputCall(context.Background(), &testpb.StreamingOutputCallRequest{})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("stream without principal: %v", err)
	}
}

func TestOutgoingMetadataCannotSmuggleCredentials(t *testing.T) {
	e := twoHops(t)
	conn, err := grpcclient.Dial(e.bAddr, grpcclient.Options{ServiceToken: e.svcTok})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	b := testpb.NewTestServiceClient(conn)
	tok := e.iss.MustMint(t, authntest.Token{Subject: "user:" + uuid.NewString(), TenantID: tenant, Audience: []string{audB}, Roles: []string{"viewer"}})
	// A stale authorization already in the outgoing metadata is replaced, not sent alongside
	// (two authorization values would be refused by the server).
	ctx := metadata.AppendToOutgoingContext(grpcclient.ActAs(context.Background(), tenant, tok), grpcserver.MDAuthorization, "Bearer stale")
	resp, err := b.UnaryCall(ctx, &testpb.SimpleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetOauthScope() != tenant {
		t.Fatalf("B saw tenant %q", resp.GetOauthScope())
	}
}
