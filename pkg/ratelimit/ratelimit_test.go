package ratelimit

import (
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newClock() *clock { return &clock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)} }

func TestBurstThenRefusalWithRetryAfter(t *testing.T) {
	clk := newClock()
	l, err := New(Config{Rate: 10, Burst: 3, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if ok, _ := l.Allow("tenant-a"); !ok {
			t.Fatalf("call %d within burst refused", i)
		}
	}
	ok, retry := l.Allow("tenant-a")
	if ok {
		t.Fatal("call beyond burst allowed")
	}
	if retry != 100*time.Millisecond {
		t.Fatalf("retryAfter = %v, want 100ms (one token at 10/s)", retry)
	}
	// A refused call gives its reservation back, so asking again does not push the wait out.
	if _, retry2 := l.Allow("tenant-a"); retry2 != retry {
		t.Fatalf("second refusal retryAfter = %v, want unchanged %v", retry2, retry)
	}
	clk.advance(retry)
	if ok, _ := l.Allow("tenant-a"); !ok {
		t.Fatal("call after retryAfter refused")
	}
}

func TestTenantsAreIsolated(t *testing.T) {
	clk := newClock()
	l, err := New(Config{Rate: 1, Burst: 2, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		l.Allow("noisy")
	}
	if ok, _ := l.Allow("noisy"); ok {
		t.Fatal("noisy tenant not limited")
	}
	if ok, _ := l.Allow("quiet"); !ok {
		t.Fatal("quiet tenant refused because another tenant is noisy")
	}
}

func TestNoTenantBucketsAreSeparate(t *testing.T) {
	clk := newClock()
	l, err := New(Config{Rate: 1, Burst: 1, NoTenantRate: 1, NoTenantBurst: 5, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	// The same string used as a tenant id and a no-tenant key must not share a bucket.
	if ok, _ := l.Allow("x"); !ok {
		t.Fatal("first tenant call refused")
	}
	for i := range 5 {
		if ok, _ := l.AllowNoTenant("x"); !ok {
			t.Fatalf("no-tenant call %d refused; buckets shared with tenants or wrong burst", i)
		}
	}
	if ok, _ := l.AllowNoTenant("x"); ok {
		t.Fatal("no-tenant burst not enforced")
	}
}

func TestLRUBoundsMemory(t *testing.T) {
	clk := newClock()
	l, err := New(Config{Rate: 1, Burst: 1, MaxKeys: 8, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		l.Allow("t" + strconv.Itoa(i))
	}
	if n := l.tenants.lru.Len(); n != 8 {
		t.Fatalf("LRU holds %d buckets, want 8", n)
	}
}

func TestNegativeConfigRefused(t *testing.T) {
	l, err := New(Config{Rate: rate.Inf, Burst: -1})
	if err == nil || l != nil {
		t.Fatal("negative burst accepted")
	}
}

func TestConcurrentCallsShareOneBucket(t *testing.T) {
	clk := newClock()
	l, err := New(Config{Rate: 1, Burst: 50, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for range 200 {
		wg.Go(func() {
			if ok, _ := l.Allow("t"); ok {
				mu.Lock()
				allowed++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if allowed != 50 {
		t.Fatalf("%d concurrent calls allowed, want exactly the burst of 50", allowed)
	}
}
