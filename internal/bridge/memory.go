package bridge

import (
	"sync"
	"time"

	"github.com/sds-bridge/sds-bridge/rotation"
)

// memoryReturnDelay is how long after a rotation's last apply its garbage
// goes back to the OS: time for the pushes, actions and logs that follow.
const memoryReturnDelay = 2 * time.Second

// memoryReturner frees memory once a rotation has settled: otherwise its
// garbage stays resident (and charged to the pod's cgroup) up to the GC's
// goal for the minutes or hours until the next. One forced collection per
// rotation costs about a millisecond, never on the push path.
type memoryReturner struct {
	delay time.Duration
	free  func()

	mu      sync.Mutex
	timer   *time.Timer
	stopped bool
}

// observe (a sink observer) pushes the return back to delay after this
// apply, so that a burst of applies leads to one.
func (m *memoryReturner) observe(rotation.SinkStatus) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.stopped:
	case m.timer == nil:
		m.timer = time.AfterFunc(m.delay, m.free)
	default:
		m.timer.Reset(m.delay)
	}
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
