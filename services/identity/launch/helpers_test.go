package launch_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
	"github.com/bulkhead/bulkhead/pkg/testenv"
	"github.com/bulkhead/bulkhead/services/identity/identitytest"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// clients are identity's four services over one loopback connection.
type clients struct {
	tenants  identityv1.TenantServiceClient
	members  identityv1.MemberServiceClient
	accounts identityv1.ServiceAccountServiceClient
	tokens   identityv1.TokenServiceClient
	conn     grpc.ClientConnInterface
}

func newClients(t *testing.T, id *identitytest.Identity) clients {
	conn := id.Conn(t)
	return clients{
		tenants:  identityv1.NewTenantServiceClient(conn),
		members:  identityv1.NewMemberServiceClient(conn),
		accounts: identityv1.NewServiceAccountServiceClient(conn),
		tokens:   identityv1.NewTokenServiceClient(conn),
		conn:     conn,
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// as returns a context whose calls carry token.
func as(t *testing.T, token string) context.Context {
	return identitytest.WithToken(testCtx(t), token)
}

func code(err error) codes.Code { return status.Code(err) }

func reason(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return ""
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

func wantCode(t *testing.T, err error, want codes.Code) {
	t.Helper()
	if got := code(err); got != want {
		t.Fatalf("got %v (%v), want %v", got, err, want)
	}
}

// eventually polls cond until it holds or the deadline passes. Used for effects that are
// bounded by a cache TTL; it waits on a ticker, never a fixed sleep.
func eventually(t *testing.T, within time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", within, err)
		}
		<-tick.C
	}
}

// clock is a settable clock for the use cases.
type clock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

var errStillAccepted = errors.New("still accepted")
