package bridge

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/sds-bridge/sds-bridge/rotation"
)

// TestMemoryIsReturnedOnceARotationSettles: the applies of one rotation
// (every sink, in quick succession) lead to one return, delay after the
// last of them; none after stop.
func TestMemoryIsReturnedOnceARotationSettles(t *testing.T) {
	var freed atomic.Int32
	m := &memoryReturner{delay: 500 * time.Millisecond, free: func() { freed.Add(1) }}
	start := time.Now()
	var lastApply time.Time
	for i := range 5 {
		if i > 0 {
			time.Sleep(20 * time.Millisecond)
		}
		lastApply = time.Now()
		m.observe(rotation.SinkStatus{Name: "sds"})
	}
	if freed.Load() != 0 {
		t.Fatalf("memory returned while the rotation's sinks were still applying (%v after the first)", time.Since(start))
	}
	deadline := time.Now().Add(5 * time.Second)
	for freed.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := freed.Load(); got != 1 {
		t.Fatalf("returned %d times, want once", got)
	}
	if waited := time.Since(lastApply); waited < m.delay {
		t.Errorf("returned %v after the last apply, want at least %v", waited, m.delay)
	}
	m.observe(rotation.SinkStatus{Name: "sds"})
	m.stop()
	m.observe(rotation.SinkStatus{Name: "sds"})
	time.Sleep(2 * m.delay)
	if got := freed.Load(); got != 1 {
		t.Errorf("returned %d times after stop, want still 1", got)
	}
}
