package rotation

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// SinkStatus is what one sink did with the newest Update handed to it.
type SinkStatus struct {
	Name string
	// Generation is the last generation the sink applied without error.
	Generation uint64
	// Pending is the newest generation handed to the sink and not yet applied.
	Pending uint64
	// Err is the error of the last Apply, nil after a success.
	Err error
	// AppliedAt and Took describe the last successful Apply.
	AppliedAt time.Time
	Took      time.Duration
	// Latency is, for the last successful Apply, the time from the
	// Workload API delivering the Update (its ReceivedAt) to the end of
	// Apply: queueing behind a slow Apply included.
	Latency time.Duration
	// Failures counts the failed Applies since start.
	Failures uint64
}

// deliverer feeds one sink from its own goroutine. It holds at most one
// waiting Update: a slow sink skips the ones it could not take in time and
// gets the newest, and never holds up the source or another sink.
type deliverer struct {
	sink   Sink
	log    *slog.Logger
	notify chan struct{}
	onDone func(SinkStatus)

	mu     sync.Mutex
	next   *Update
	status SinkStatus
}

func newDeliverer(sink Sink, log *slog.Logger, onDone func(SinkStatus)) *deliverer {
	return &deliverer{
		sink:   sink,
		log:    log.With("sink", sink.Name()),
		notify: make(chan struct{}, 1),
		onDone: onDone,
		status: SinkStatus{Name: sink.Name()},
	}
}

// offer hands u to the sink without waiting for it.
func (d *deliverer) offer(u *Update) {
	d.mu.Lock()
	d.next = u
	d.status.Pending = u.Generation
	d.mu.Unlock()
	select {
	case d.notify <- struct{}{}:
	default:
	}
}

func (d *deliverer) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.notify:
		}
		d.mu.Lock()
		u := d.next
		d.next = nil
		d.mu.Unlock()
		if u == nil {
			continue
		}
		start := time.Now()
		err := d.sink.Apply(ctx, u)
		took := time.Since(start)

		d.mu.Lock()
		d.status.Err = err
		if err == nil {
			d.status.Generation = u.Generation
			d.status.AppliedAt = start.Add(took)
			d.status.Took = took
			d.status.Latency = d.status.AppliedAt.Sub(u.ReceivedAt)
		} else {
			d.status.Failures++
		}
		if d.next == nil {
			d.status.Pending = 0
		}
		st := d.status
		d.mu.Unlock()

		if err != nil {
			if ctx.Err() == nil {
				d.log.Error("sink failed to apply update", "generation", u.Generation, "error", err)
			}
		} else {
			d.log.Debug("sink applied update", "generation", u.Generation, "took", took)
		}
		if d.onDone != nil {
			d.onDone(st)
		}
	}
}

func (d *deliverer) snapshot() SinkStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.status
}
