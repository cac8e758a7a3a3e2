package grpcserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/bulkhead/bulkhead/pkg/apierr"
	"github.com/bulkhead/bulkhead/pkg/authn"
	"github.com/bulkhead/bulkhead/pkg/authn/authntest"
	"github.com/bulkhead/bulkhead/pkg/authz"
	"github.com/bulkhead/bulkhead/pkg/claims"
	"github.com/bulkhead/bulkhead/pkg/logging"
	"github.com/bulkhead/bulkhead/pkg/ratelimit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	audience  = "bulkhead.test"
	tenantA   = "6f1c8a52-3d1e-4d4b-8f0e-2a9c7b5e1d01"
	suspended = "6f1c8a52-3d1e-4d4b-8f0e-2a9c7b5e1d02"

	mEmpty     = "/grpc.testing.TestService/EmptyCall"
	mUnary     = "/grpc.testing.TestService/UnaryCall"
	mCacheable = "/grpc.testing.TestService/CacheableUnaryCall"
	mStream    = "/grpc.testing.TestService/StreamingOutputCall"

	panicCode    = 99 // UnaryCall with this response status panics
	internalCode = 98 // … returns an internal error carrying a secret
)

var testPolicy = authz.Policy{
	mEmpty:  {Public: true},
	mUnary:  {Permission: authz.RecordsRead},
	mStream: {Permission: authz.RecordsRead},
	// mCacheable is deliberately missing: it is registered but has no rule.
}

// testService reports what the handler saw: subject in Username, tenant in OauthScope, the hop's
// caller in Hostname.
type testService struct {
	testpb.UnimplementedTestServiceServer
}

func (testService) EmptyCall(context.Context, *testpb.Empty) (*testpb.Empty, error) {
	return &testpb.Empty{}, nil
}

func (testService) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	switch req.GetResponseStatus().GetCode() {
	case panicCode:
		panic("handler exploded")
	case internalCode:
		return nil, errors.New("connect to db: password=hunter2 refused")
	}
	c, ok := claims.FromContext(ctx)
	if !ok { // the bare server of the benchmarks has no chain
		return &testpb.SimpleResponse{}, nil
	}
	return &testpb.SimpleResponse{Username: c.SubjectString(), OauthScope: c.TenantID, Hostname: c.Caller}, nil
}

func (testService) CacheableUnaryCall(context.Context, *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return &testpb.SimpleResponse{}, nil
}

func (testService) StreamingOutputCall(_ *testpb.StreamingOutputCallRequest, s grpc.ServerStreamingServer[testpb.StreamingOutputCallResponse]) error {
	c, _ := claims.FromContext(s.Context())
	return s.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: []byte(c.TenantID)}})
}

// syncBuffer collects log output from concurrent handlers.
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

// lines returns the JSON log records.
func (s *syncBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", l)
		}
		out = append(out, m)
	}
	return out
}

type env struct {
	iss    *authntest.Issuer
	logs   *syncBuffer
	srv    *Server
	conn   *grpc.ClientConn
	client testpb.TestServiceClient
}

type options struct {
	limiter   *ratelimit.Limiter
	cacheSize int
	logOut    io.Writer    // default: env.logs
	policy    authz.Policy // default: testPolicy
	register  func(*env)   // registers more services before serving
}

func tenantStatus() authn.TenantStatus {
	return authn.TenantStatusFunc(func(_ context.Context, id string) (bool, error) { return id == tenantA, nil })
}

// start serves testService through the full chain on a loopback TCP port.
func start(tb testing.TB, o options) *env {
	tb.Helper()
	e := &env{iss: authntest.NewIssuer(tb), logs: &syncBuffer{}}
	set := e.iss.PublicSet()
	v, err := authn.NewVerifier(authn.VerifierConfig{
		Issuer: authntest.DefaultIssuer, Audience: audience,
		Keys:      authn.KeyFunc(func(context.Context) (jwk.Set, error) { return set, nil }),
		Tenants:   tenantStatus(),
		CacheSize: o.cacheSize,
	})
	if err != nil {
		tb.Fatal(err)
	}
	policy := testPolicy
	if o.policy != nil {
		policy = o.policy
	}
	var logOut io.Writer = e.logs
	if o.logOut != nil {
		logOut = o.logOut
	}
	e.srv, err = New(Config{
		Logger:      logging.NewJSON(logOut, slog.LevelInfo),
		Verifier:    v,
		Policy:      policy,
		RateLimiter: o.limiter,
	})
	if err != nil {
		tb.Fatal(err)
	}
	testpb.RegisterTestServiceServer(e.srv, testService{})
	if o.register != nil {
		o.register(e)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	// Serve, not Run: Run would refuse this server because mCacheable has no rule, and these
	// tests check the run-time refusal too.
	go func() { _ = e.srv.Serve(lis) }()
	tb.Cleanup(e.srv.Stop)
	e.conn, err = grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = e.conn.Close() })
	e.client = testpb.NewTestServiceClient(e.conn)
	return e
}

func (e *env) token(tb testing.TB, mod func(*authntest.Token)) string {
	tb.Helper()
	t := authntest.Token{Subject: "user:" + uuid.NewString(), TenantID: tenantA, Audience: []string{audience}, Roles: []string{"viewer"}}
	if mod != nil {
		mod(&t)
	}
	return e.iss.MustMint(tb, t)
}

func withToken(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, MDAuthorization, "Bearer "+token)
}

func TestChainRefusals(t *testing.T) {
	e := start(t, options{})
	ctx := context.Background()
	other := authntest.NewIssuer(t)
	cases := []struct {
		name   string
		ctx    context.Context
		method func(context.Context) error
		want   codes.Code
		reason string
	}{
		{"missing token", ctx, e.unary, codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"not a bearer", metadata.AppendToOutgoingContext(ctx, MDAuthorization, "Basic dXNlcjpwYXNz"), e.unary, codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"two authorization headers", metadata.AppendToOutgoingContext(withToken(ctx, e.token(t, nil)), MDAuthorization, "Bearer x"), e.unary, codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"wrong audience", withToken(ctx, e.token(t, func(tk *authntest.Token) { tk.Audience = []string{"bulkhead.other"} })), e.unary, codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"signed by another issuer key", withToken(ctx, other.MustMint(t, authntest.Token{Subject: "user:" + uuid.NewString(), TenantID: tenantA, Audience: []string{audience}, Roles: []string{"owner"}})), e.unary, codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"suspended tenant", withToken(ctx, e.token(t, func(tk *authntest.Token) { tk.TenantID = suspended })), e.unary, codes.PermissionDenied, apierr.ReasonTenantSuspended},
		{"no permission (role grants nothing)", withToken(ctx, e.token(t, func(tk *authntest.Token) { tk.Roles = []string{"guest"} })), e.unary, codes.PermissionDenied, apierr.ReasonPermissionDenied},
		{"method missing from policy", withToken(ctx, e.token(t, func(tk *authntest.Token) { tk.Roles = []string{"owner"} })), e.cacheable, codes.PermissionDenied, apierr.ReasonPermissionDenied},
		{"method missing from policy, no token", ctx, e.cacheable, codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"service token that is a user token", metadata.AppendToOutgoingContext(withToken(ctx, e.token(t, nil)), MDServiceToken, e.token(t, nil)), e.unary, codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"invalid service token", metadata.AppendToOutgoingContext(withToken(ctx, e.token(t, nil)), MDServiceToken, "garbage"), e.unary, codes.Unauthenticated, apierr.ReasonUnauthenticated},
		{"stream without token", ctx, e.stream, codes.Unauthenticated, apierr.ReasonUnauthenticated},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.method(tc.ctx)
			if got := status.Code(err); got != tc.want {
				t.Fatalf("code = %v, want %v (%v)", got, tc.want, err)
			}
			if r := reason(err); r != tc.reason {
				t.Fatalf("reason = %q, want %q", r, tc.reason)
			}
		})
	}
}

func reason(err error) string {
	for _, d := range status.Convert(err).Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			return ei.GetReason()
		}
	}
	return ""
}

func (e *env) unary(ctx context.Context) error {
	_, err := e.client.UnaryCall(ctx, &testpb.SimpleRequest{})
	return err
}

func (e *env) cacheable(ctx context.Context) error {
	_, err := e.client.CacheableUnaryCall(ctx, &testpb.SimpleRequest{})
	return err
}

func (e *env) stream(ctx context.Context) error {
	s, err := e.client.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{})
	if err != nil {
		return err
	}
	_, err = s.Recv()
	return err
}

func TestAuthenticatedCallsSeeClaims(t *testing.T) {
	e := start(t, options{})
	ctx := context.Background()
	userTok := e.token(t, nil)
	svcTok := e.iss.MustMint(t, authntest.Token{Subject: "svc:connection", Audience: []string{audience}})

	resp, err := e.client.UnaryCall(metadata.AppendToOutgoingContext(withToken(ctx, userTok), MDServiceToken, svcTok), &testpb.SimpleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetOauthScope() != tenantA || !strings.HasPrefix(resp.GetUsername(), "user:") || resp.GetHostname() != "svc:connection" {
		t.Fatalf("handler saw %+v", resp)
	}

	s, err := e.client.StreamingOutputCall(withToken(ctx, userTok), &testpb.StreamingOutputCallRequest{})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if string(msg.GetPayload().GetBody()) != tenantA {
		t.Fatalf("stream handler saw tenant %q", msg.GetPayload().GetBody())
	}
}

func TestPublicMethodAndHealthNeedNoToken(t *testing.T) {
	e := start(t, options{})
	ctx := context.Background()
	if _, err := e.client.EmptyCall(ctx, &testpb.Empty{}); err != nil {
		t.Fatalf("public method: %v", err)
	}
	hc := healthpb.NewHealthClient(e.conn)
	resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", resp, err)
	}
	e.srv.Health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	resp, err = hc.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health after flip: %v %v", resp, err)
	}
}

func TestPanicBecomesInternalWithoutStack(t *testing.T) {
	e := start(t, options{})
	_, err := e.client.UnaryCall(withToken(context.Background(), e.token(t, nil)), &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: panicCode}})
	st := status.Convert(err)
	if st.Code() != codes.Internal {
		t.Fatalf("code %v, want Internal", st.Code())
	}
	if st.Message() != "internal error" || strings.Contains(st.Message(), "goroutine") || strings.Contains(st.Message(), "exploded") {
		t.Fatalf("client sees %q", st.Message())
	}
	if logs := e.logs.String(); !strings.Contains(logs, "handler exploded") || !strings.Contains(logs, "goroutine") {
		t.Fatalf("panic and stack not logged server-side:\n%s", logs)
	}
	// The server keeps serving.
	if _, err := e.client.EmptyCall(context.Background(), &testpb.Empty{}); err != nil {
		t.Fatal(err)
	}
}

func TestInternalErrorHiddenButLogged(t *testing.T) {
	e := start(t, options{})
	_, err := e.client.UnaryCall(withToken(context.Background(), e.token(t, nil)), &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: internalCode}})
	st := status.Convert(err)
	if st.Code() != codes.Internal || strings.Contains(st.Message(), "hunter2") {
		t.Fatalf("client sees %v %q", st.Code(), st.Message())
	}
	found := false
	for _, l := range e.logs.lines(t) {
		if l["msg"] == "internal error" && strings.Contains(l["error"].(string), "hunter2") && l[logging.KeyTenantID] == tenantA {
			found = true
		}
	}
	if !found {
		t.Fatalf("internal error detail not logged with tenant:\n%s", e.logs.String())
	}
}

func TestRequestIDPropagates(t *testing.T) {
	e := start(t, options{})
	var hdr metadata.MD
	ctx := metadata.AppendToOutgoingContext(context.Background(), MDRequestID, "req-abc-123")
	if _, err := e.client.EmptyCall(ctx, &testpb.Empty{}, grpc.Header(&hdr)); err != nil {
		t.Fatal(err)
	}
	if got := hdr.Get(MDRequestID); len(got) != 1 || got[0] != "req-abc-123" {
		t.Fatalf("response x-request-id = %v", got)
	}
	// Without one, or with one unfit for logs, the server makes one up.
	for _, in := range []string{"", "has space;and=more", strings.Repeat("a", 200)} {
		ctx := context.Background()
		if in != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, MDRequestID, in)
		}
		hdr = nil
		if _, err := e.client.EmptyCall(ctx, &testpb.Empty{}, grpc.Header(&hdr)); err != nil {
			t.Fatal(err)
		}
		got := hdr.Get(MDRequestID)
		if len(got) != 1 {
			t.Fatalf("no request id for %q", in)
		}
		if _, err := uuid.Parse(got[0]); err != nil {
			t.Fatalf("input %q: request id %q is not a fresh uuid", in, got[0])
		}
	}
}

func TestLogsCarryTenantAndRequestIDButNoToken(t *testing.T) {
	e := start(t, options{})
	tok := e.token(t, nil)
	svcTok := e.iss.MustMint(t, authntest.Token{Subject: "svc:connection", Audience: []string{audience}})
	ctx := metadata.AppendToOutgoingContext(withToken(context.Background(), tok), MDRequestID, "req-log-1", MDServiceToken, svcTok)
	resp, err := e.client.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("request-body-secret")}})
	if err != nil {
		t.Fatal(err)
	}
	var line map[string]any
	for _, l := range e.logs.lines(t) {
		if l["grpc.method"] == "UnaryCall" && l["msg"] == "finished call" {
			line = l
		}
	}
	if line == nil {
		t.Fatalf("no finished-call line:\n%s", e.logs.String())
	}
	for k, want := range map[string]any{
		logging.KeyTenantID: tenantA, logging.KeyRequestID: "req-log-1", logging.KeySubject: resp.GetUsername(),
		logging.KeyCaller: "svc:connection", "grpc.code": "OK",
	} {
		if line[k] != want {
			t.Errorf("%s = %v, want %v", k, line[k], want)
		}
	}
	if _, ok := line["grpc.time_ms"]; !ok {
		t.Error("no duration")
	}
	logs := e.logs.String()
	for _, secret := range []string{tok, strings.Split(tok, ".")[2], svcTok, strings.Split(svcTok, ".")[2], "request-body-secret"} {
		if strings.Contains(logs, secret) {
			t.Fatalf("logs contain a token or the request body:\n%s", logs)
		}
	}
}

func TestRateLimitPerTenantWithRetryInfo(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	lim, err := ratelimit.New(ratelimit.Config{Rate: 1, Burst: 2, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	e := start(t, options{limiter: lim})
	ctx := withToken(context.Background(), e.token(t, nil))
	for i := range 2 {
		if _, err := e.client.UnaryCall(ctx, &testpb.SimpleRequest{}); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	_, err = e.client.UnaryCall(ctx, &testpb.SimpleRequest{})
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted || reason(err) != apierr.ReasonRateLimited {
		t.Fatalf("third call: %v", err)
	}
	var retry *errdetails.RetryInfo
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			retry = ri
		}
	}
	if retry == nil || retry.GetRetryDelay().AsDuration() != time.Second {
		t.Fatalf("RetryInfo = %v, want 1s", retry)
	}
	// Another tenant's principal… shares nothing; public calls use a per-peer bucket.
	if _, err := e.client.EmptyCall(context.Background(), &testpb.Empty{}); err != nil {
		t.Fatalf("public call limited by a tenant's bucket: %v", err)
	}
	// Health is never limited.
	for range 5 {
		if _, err := healthpb.NewHealthClient(e.conn).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("health limited: %v", err)
		}
	}
}

func TestRunRefusesMethodsWithoutRule(t *testing.T) {
	e := start(t, options{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	err = e.srv.Run(context.Background(), lis)
	if err == nil || !strings.Contains(err.Error(), mCacheable) {
		t.Fatalf("Run = %v, want refusal naming %s", err, mCacheable)
	}
}

func TestRunStopsWithContext(t *testing.T) {
	iss := authntest.NewIssuer(t)
	set := iss.PublicSet()
	v, err := authn.NewVerifier(authn.VerifierConfig{Issuer: authntest.DefaultIssuer, Audience: audience,
		Keys: authn.KeyFunc(func(context.Context) (jwk.Set, error) { return set, nil }), Tenants: tenantStatus()})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{Logger: slog.New(slog.DiscardHandler), Verifier: v, Policy: authz.Policy{mEmpty: {Public: true}}})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true)); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel = %v", err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Fatal("empty config accepted")
	}
	_, err := New(Config{Logger: slog.New(slog.DiscardHandler), Verifier: &authn.Verifier{}, Policy: authz.Policy{mUnary: {Permission: "records.reed"}}})
	if err == nil {
		t.Fatal("policy with unknown permission accepted")
	}
}
