package engine_test

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/pkg/providertest"
	"github.com/bulkhead/bulkhead/pkg/testenv"
	"github.com/bulkhead/bulkhead/services/sync/internal/engine"
	"github.com/bulkhead/bulkhead/services/sync/internal/fetch"
	"github.com/bulkhead/bulkhead/services/sync/internal/store"
)

// slowProvider adds a fixed latency to every provider request, as a real provider has: it is
// what keeps the noisy tenant's workers busy.
type slowProvider struct {
	latency time.Duration
	next    http.RoundTripper
}

func (s slowProvider) RoundTrip(r *http.Request) (*http.Response, error) {
	t := time.NewTimer(s.latency)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
		return nil, r.Context().Err()
	}
	return s.next.RoundTrip(r)
}

// BenchmarkNoisyNeighbour measures tenant B's time from StartSync to its first committed page,
// alone and while tenant A keeps 200 connections busy (each sync 20 pages against a provider
// with 10 ms latency), and reports the ratio of the medians, loaded/alone (goal ≤ 1.5). What
// keeps it low: A holds at most TenantConcurrency workers, A's surplus jobs snooze, and B's job
// — from a tenant with nothing else due — gets a better River priority than A's backlog.
func BenchmarkNoisyNeighbour(b *testing.B) {
	const busy, latency, samples = 200, 10 * time.Millisecond, 15
	e := newEnv(b, providertest.Options{API: providertest.APIOptions{SeedRecords: 200, MaxPageSize: 10}})
	tenantA, tenantB := testenv.TwoTenants()
	f, err := fetch.New(fetch.Config{
		HTTPClient: &http.Client{Transport: slowProvider{latency: latency, next: http.DefaultTransport}},
		Rate:       1e6, Burst: 1e6,
	})
	if err != nil {
		b.Fatal(err)
	}
	var (
		mu      sync.Mutex
		firstAt = map[string]time.Time{} // B's sync id → its first page's commit
		commits = make(chan struct{}, 1)
	)
	en, _ := e.engine(b, func(c *engine.Config) {
		c.Fetcher = f
		c.Hooks.PageCommitted = func(_ context.Context, tenantID, syncID string, _, page int64) {
			if tenantID != tenantB.TenantID || page != 1 {
				return
			}
			mu.Lock()
			firstAt[syncID] = time.Now()
			mu.Unlock()
			select {
			case commits <- struct{}{}:
			default:
			}
		}
	})
	// sample starts a fresh sync of B and returns the time to its first committed page.
	sample := func() time.Duration {
		conn, _ := e.connect(b, tenantB)
		start := time.Now()
		s, err := en.StartSync(context.Background(), tenantB, engine.StartSpec{ConnectionID: conn, Integration: "providertest", Model: "records", Mode: store.ModeFull})
		if err != nil {
			b.Fatal(err)
		}
		deadline := time.After(time.Minute)
		for {
			mu.Lock()
			at, ok := firstAt[s.ID]
			mu.Unlock()
			if ok {
				// B is a tenant with one busy connection at a time: stop this one before the
				// next sample, or B's own earlier runs would make B the noisy tenant.
				if _, err := en.PauseSync(context.Background(), tenantB, conn, "records"); err != nil {
					b.Fatal(err)
				}
				return at.Sub(start)
			}
			select {
			case <-commits:
			case <-time.After(5 * time.Millisecond):
			case <-deadline:
				b.Fatal("B's first page never committed")
			}
		}
	}
	median := func(ds []time.Duration) time.Duration {
		slices.Sort(ds)
		return ds[len(ds)/2]
	}

	var alone []time.Duration
	for range samples {
		alone = append(alone, sample())
	}
	for range busy {
		conn, _ := e.connect(b, tenantA)
		if _, err := en.StartSync(context.Background(), tenantA, engine.StartSpec{ConnectionID: conn, Integration: "providertest", Model: "records", Mode: store.ModeFull}); err != nil {
			b.Fatal(err)
		}
	}
	var loaded []time.Duration
	for b.Loop() {
		loaded = append(loaded, sample())
	}
	ma, ml := median(alone), median(loaded)
	b.ReportMetric(float64(ma.Microseconds())/1000, "alone_ms")
	b.ReportMetric(float64(ml.Microseconds())/1000, "loaded_ms")
	b.ReportMetric(float64(ml)/float64(ma), "loaded/alone")
}
