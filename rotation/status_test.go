package rotation

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sds-bridge/sds-bridge/internal/devapi"
)

// toggleSink fails while failing is set; the test flips it between updates.
type toggleSink struct{ failing atomic.Bool }

func (s *toggleSink) Name() string { return "flaky" }

func (s *toggleSink) Apply(context.Context, *Update) error {
	if s.failing.Load() {
		return errors.New("disk full")
	}
	return nil
}

// OnSinkDone sees every Apply with its failure count and, after a
// success, the latency from the Workload API's delivery.
func TestSinkStatusCountsFailuresAndLatency(t *testing.T) {
	sink := &toggleSink{}
	sink.failing.Store(true)
	done := make(chan SinkStatus, 10)
	// Retries are not what this counts: none comes within the test.
	h := start(t, Config{OnSinkDone: func(st SinkStatus) { done <- st }, RetryBackoff: time.Hour}, sink)
	next := func() SinkStatus {
		t.Helper()
		select {
		case st := <-done:
			return st
		case <-time.After(10 * time.Second):
			t.Fatal("no OnSinkDone call")
			return SinkStatus{}
		}
	}

	h.push(h.issue(devapi.SVIDOptions{}))
	if st := next(); st.Failures != 1 || st.Err == nil || st.Generation != 0 {
		t.Fatalf("after a failed Apply: %+v", st)
	}
	h.push(h.issue(devapi.SVIDOptions{}))
	if st := next(); st.Failures != 2 {
		t.Fatalf("after two failed Applies: %+v", st)
	}
	sink.failing.Store(false)
	h.push(h.issue(devapi.SVIDOptions{}))
	st := next()
	if st.Failures != 2 || st.Err != nil || st.Generation != 3 {
		t.Fatalf("after a successful Apply: %+v", st)
	}
	received := h.src.Current().ReceivedAt
	if st.Latency <= 0 || st.Latency != st.AppliedAt.Sub(received) {
		t.Errorf("latency %s, want AppliedAt - ReceivedAt = %s", st.Latency, st.AppliedAt.Sub(received))
	}
	if got := h.src.SinkStatuses()[0]; got.Failures != 2 || got.Latency != st.Latency {
		t.Errorf("SinkStatuses = %+v, want what OnSinkDone saw: %+v", got, st)
	}
}
