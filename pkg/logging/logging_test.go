package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"
)

func TestRecordsCarryRequestFields(t *testing.T) {
	var buf bytes.Buffer
	log := NewJSON(&buf, slog.LevelInfo)
	ctx, f := WithFields(context.Background(), "req-1")
	// Set after the context was built: the pointer is shared, as in the interceptor chain.
	f.SetPrincipal("tenant-1", "user:u1", "svc:connection")
	log.With("component", "test").InfoContext(ctx, "hello")

	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("not JSON: %v: %s", err, buf.String())
	}
	for k, want := range map[string]string{
		KeyRequestID: "req-1", KeyTenantID: "tenant-1", KeySubject: "user:u1", KeyCaller: "svc:connection", "component": "test",
	} {
		if rec[k] != want {
			t.Errorf("%s = %v, want %q", k, rec[k], want)
		}
	}
}

func TestNoFieldsOutsideRequest(t *testing.T) {
	var buf bytes.Buffer
	NewJSON(&buf, slog.LevelInfo).InfoContext(context.Background(), "boot")
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatal(err)
	}
	if _, ok := rec[KeyRequestID]; ok {
		t.Fatal("request_id logged outside a request")
	}
	if RequestID(context.Background()) != "" {
		t.Fatal("RequestID outside a request is not empty")
	}
}

func TestConcurrentSetAndLog(t *testing.T) {
	var buf safeBuffer
	log := NewJSON(&buf, slog.LevelInfo)
	ctx, f := WithFields(context.Background(), "r")
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			f.SetPrincipal("t", "user:u", "")
			log.InfoContext(ctx, "x")
		})
	}
	wg.Wait()
	lines := bytes.Split(bytes.TrimSpace(buf.b.Bytes()), []byte("\n"))
	if len(lines) != 8 {
		t.Fatalf("%d lines, want 8", len(lines))
	}
	for _, l := range lines {
		var rec map[string]any
		if err := json.Unmarshal(l, &rec); err != nil || rec[KeyTenantID] != "t" {
			t.Fatalf("line %s: err %v, missing tenant", l, err)
		}
	}
}

type safeBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
