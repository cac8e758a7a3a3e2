package e2e

import (
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	identityv1 "github.com/bulkhead/bulkhead/gen/bulkhead/identity/v1"
)

// link is a TCP path to a real server that can be cut: while down it accepts and drops every
// connection (and cuts the open ones), while up it forwards bytes both ways. It injects the
// fault; the servers on both ends are the real ones.
type link struct {
	ln     net.Listener
	target string
	up     atomic.Bool
	mu     sync.Mutex
	open   map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func newLink(t *testing.T, target string) *link {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &link{ln: ln, target: target, open: map[net.Conn]struct{}{}}
	l.wg.Go(l.serve)
	t.Cleanup(func() {
		_ = ln.Close()
		l.cut()
		l.wg.Wait()
	})
	return l
}

func (l *link) addr() string { return l.ln.Addr().String() }

func (l *link) setUp(up bool) {
	l.up.Store(up)
	if !up {
		l.cut()
	}
}

// cut closes every forwarded connection.
func (l *link) cut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.open {
		_ = c.Close()
	}
	clear(l.open)
}

func (l *link) track(cs ...net.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range cs {
		l.open[c] = struct{}{}
	}
}

func (l *link) serve() {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		if !l.up.Load() {
			_ = c.Close()
			continue
		}
		s, err := net.Dial("tcp", l.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		l.track(c, s)
		pipe := func(dst, src net.Conn) {
			_, _ = io.Copy(dst, src) // ends when either side closes or the link is cut
			_, _ = dst.Close(), src.Close()
		}
		l.wg.Go(func() { pipe(s, c) })
		l.wg.Go(func() { pipe(c, s) })
	}
}

// TestSagaSurvivesVaultBrokerOutage: with the vault-broker unreachable, onboarding still
// succeeds (the tenant shows vault.provision pending with the reason) and is completed once
// the broker is back; a deletion goes as far as it can — connections revoked, sync purged —
// and the tenant stays DELETING, never DELETED, until the broker has deleted its Vault layout.
func TestSagaSurvivesVaultBrokerOutage(t *testing.T) {
	clk := &clock{}
	env := startEnv(t, clk)
	broker := newLink(t, env.Broker.GRPCAddr)
	s := startSagaOn(t, env, clk, broker.addr(), 0)

	created, err := s.tenants.CreateTenant(testCtx(t), &identityv1.CreateTenantRequest{Name: "during-outage", OwnerEmail: "owner@outage.example"})
	if err != nil {
		t.Fatalf("CreateTenant with the vault-broker down: %v", err)
	}
	id := created.GetTenant().GetTenantId()
	l := created.GetTenant().GetLifecycle()
	if l.GetPendingStep() != "vault.provision" || l.GetAttempts() < 1 || !strings.Contains(l.GetLastError(), "Unavailable") {
		t.Fatalf("lifecycle after CreateTenant with the broker down: %v", l)
	}

	broker.setUp(true)
	s.waitTenant(t, id, "provisioned once the broker is back", provisioned)

	broker.setUp(false)
	owner := s.env.Identity.Token(t, created.GetApiKeySecret())
	if _, err := s.tenants.DeleteTenant(as(t, owner), &identityv1.DeleteTenantRequest{TenantId: id}); err != nil {
		t.Fatal(err)
	}
	stuck := s.waitTenant(t, id, "waiting for the broker to deprovision", func(tn *identityv1.Tenant) bool {
		return tn.GetLifecycle().GetPendingStep() == "vault.deprovision" && tn.GetLifecycle().GetAttempts() > 0
	})
	if stuck.GetStatus() != identityv1.TenantStatus_TENANT_STATUS_DELETING {
		t.Fatalf("status while Vault is not cleared: %v", stuck.GetStatus())
	}

	broker.setUp(true)
	tn := s.waitTenant(t, id, "deleted once the broker is back", deleted)
	if got := tn.GetLifecycle().GetCompletedSteps(); len(got) != 4 || got[3] != "vault.deprovision" {
		t.Fatalf("completed steps %v", got)
	}
	if s.env.Broker.Provision(t, id).GetAlreadyProvisioned() {
		t.Fatal("the tenant's Vault layout survived")
	}
}
