package launch_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/bulkhead/bulkhead/pkg/providertest"
	"github.com/bulkhead/bulkhead/pkg/testenv"
	"github.com/bulkhead/bulkhead/services/identity/identitytest"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// as returns a context whose calls carry token.
func as(t *testing.T, token string) context.Context {
	return identitytest.WithToken(testCtx(t), token)
}

// viaService returns a context whose calls carry token and the service token of a Bulkhead
// service (the hop GetAccessToken requires for users' tokens).
func viaService(t *testing.T, token, serviceToken string) context.Context {
	return identitytest.WithServiceToken(as(t, token), serviceToken)
}

func statusCode(err error) codes.Code { return status.Code(err) }

func wantCode(t *testing.T, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("code = %v (%v), want %v", got, err, want)
	}
}

func wantReason(t *testing.T, err error, code codes.Code, reason string) {
	t.Helper()
	wantCode(t, err, code)
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			if info.GetReason() != reason {
				t.Fatalf("reason = %s, want %s (%v)", info.GetReason(), reason, err)
			}
			return
		}
	}
	t.Fatalf("no ErrorInfo in %v", err)
}

// clock is a settable test clock shared by every instance.
type clock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

// providerStatus calls the provider API with an access token and returns the status.
func providerStatus(t *testing.T, p *providertest.Provider, token string) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(testCtx(t), http.MethodGet, p.URL+providertest.PathMe, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func withMD(ctx context.Context, k, v string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, k, v)
}
