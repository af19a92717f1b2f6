package bridge

import (
	"sync"
	"time"

	"github.com/sds-bridge/sds-bridge/rotation"
)

// memoryReturnDelay is how long after the last sink finished a rotation
// the bridge gives the rotation's garbage back to the OS: long enough for
// the pushes, reload actions and log lines that follow an apply.
const memoryReturnDelay = 2 * time.Second

// memoryReturner frees memory once a rotation has settled. A rotation
// allocates (parsed SVIDs, Secrets, rendered files, one response per SDS
// stream) and then nothing happens for minutes or hours; left to itself,
// the garbage stays resident up to the GC's goal (twice the live heap),
// and anonymous memory is what a pod's memory cgroup charges. One forced
// collection and scavenge per rotation costs about a millisecond of CPU
// with a few MiB of heap and never runs on the push path.
type memoryReturner struct {
	delay time.Duration
	free  func()

	mu      sync.Mutex
	timer   *time.Timer
	stopped bool
}

// observe (a sink observer) pushes the return back to delay after this
// apply, so that a rotation's sinks, or a burst of rotations, lead to one.
func (m *memoryReturner) observe(rotation.SinkStatus) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		return
	}
	if m.timer == nil {
		m.timer = time.AfterFunc(m.delay, m.free)
		return
	}
	m.timer.Reset(m.delay)
}

// stop cancels a pending return; observe does nothing afterwards.
func (m *memoryReturner) stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stopped = true
	if m.timer != nil {
		m.timer.Stop()
	}
}
