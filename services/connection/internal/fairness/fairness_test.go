package fairness_test

import (
	"errors"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/services/connection/internal/fairness"
)

var errBoom = errors.New("provider answered 503")

func TestBreakerIsPerTenantAndIntegration(t *testing.T) {
	s, err := fairness.New(fairness.Config{BreakerFailures: 3, BreakerOpen: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := s.Do("a", "github", func() error { return fairness.Failure(errBoom) }); !errors.Is(err, errBoom) {
			t.Fatalf("err = %v", err)
		}
	}
	ran := false
	if err := s.Do("a", "github", func() error { ran = true; return nil }); !errors.Is(err, fairness.ErrOpen) || ran {
		t.Fatalf("a/github after failures: err = %v, ran = %v; want ErrOpen without running", err, ran)
	}
	for _, pair := range [][2]string{{"b", "github"}, {"a", "slack"}} {
		if err := s.Do(pair[0], pair[1], func() error { return nil }); err != nil {
			t.Fatalf("%v: %v", pair, err)
		}
	}
}

func TestOnlyFailuresTrip(t *testing.T) {
	s, err := fairness.New(fairness.Config{BreakerFailures: 2, BreakerOpen: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	notMine := errors.New("404 is an answer")
	for range 5 {
		if err := s.Do("a", "p", func() error { return notMine }); !errors.Is(err, notMine) {
			t.Fatalf("err = %v", err)
		}
	}
	if err := s.Do("a", "p", func() error { return nil }); err != nil {
		t.Fatalf("breaker opened on answers that are not failures: %v", err)
	}
}

func TestRateIsPerTenantAndIntegration(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	s, err := fairness.New(fairness.Config{Rate: 1, Burst: 2, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if ok, _ := s.Allow("a", "p"); !ok {
			t.Fatalf("call %d refused within the burst", i)
		}
	}
	ok, retry := s.Allow("a", "p")
	if ok || retry <= 0 || retry > time.Second {
		t.Fatalf("third call: ok = %v, retry = %v; want refused with a retry within 1s", ok, retry)
	}
	if ok, _ := s.Allow("b", "p"); !ok {
		t.Fatal("tenant b refused because of a")
	}
	if ok, _ := s.Allow("a", "q"); !ok {
		t.Fatal("a's other integration refused")
	}
	now = now.Add(time.Second)
	if ok, _ := s.Allow("a", "p"); !ok {
		t.Fatal("not refilled after a second")
	}
}
