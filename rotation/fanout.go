package rotation

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// Defaults of Config.RetryBackoff and MaxRetryBackoff: a disk that was
// full is caught up within 5 s of being freed; an attempt costs a few KiB.
const (
	DefaultRetryBackoff    = time.Second
	DefaultMaxRetryBackoff = 4 * time.Second
)

// ErrUpdateInPlace wraps an Apply error of a later step (a folder's reload
// action, retried on its own): the Update is in place and not applied again.
var ErrUpdateInPlace = errors.New("update in place, a later step failed")

// SinkStatus is what one sink did with the newest Update handed to it.
type SinkStatus struct {
	Name       string
	Generation uint64 // last applied without error
	// Pending is the newest generation handed over and not yet applied.
	Pending uint64
	Err     error // of the last Apply
	// AppliedAt, Took and Latency (from ReceivedAt, queueing and failed
	// attempts included) describe the last successful Apply.
	AppliedAt time.Time
	Took      time.Duration
	Latency   time.Duration
	Failures  uint64 // failed Applies since start
	// RetryingSince is when the current run of failures began; zero when
	// not retrying. Attempts counts them.
	RetryingSince time.Time
	Attempts      uint64
	// NextRetryAt is zero when no retry is scheduled.
	NextRetryAt time.Time
	// Retries counts Applies that repeated a failed Update.
	Retries uint64
}

// Retrying reports whether the sink is retrying a failed Update.
func (st SinkStatus) Retrying() bool { return !st.RetryingSince.IsZero() }

// deliverer feeds one sink from its own goroutine through a latest-wins
// slot: a slow sink skips to the newest Update and holds up no one. A
// failed Update goes back into the slot for a timer to retry, unless a
// newer one replaces it.
type deliverer struct {
	sink   Sink
	cfg    *Config // the Source's
	log    *slog.Logger
	notify chan struct{}
	pace   time.Duration // Paced.MinApplyInterval

	mu     sync.Mutex
	next   *Update
	status SinkStatus
}

func newDeliverer(sink Sink, cfg *Config) *deliverer {
	d := &deliverer{
		sink:   sink,
		cfg:    cfg,
		log:    cfg.Logger.With("sink", sink.Name()),
		notify: make(chan struct{}, 1),
		status: SinkStatus{Name: sink.Name()},
	}
	if p, ok := sink.(Paced); ok {
		d.pace = max(p.MinApplyInterval(), 0)
	}
	return d
}

// offer hands u to the sink without waiting for it.
func (d *deliverer) offer(u *Update) {
	d.mu.Lock()
	d.next = u
	d.status.Pending = u.Generation
	d.mu.Unlock()
	d.wake()
}

func (d *deliverer) wake() {
	select {
	case d.notify <- struct{}{}:
	default:
	}
}

// retryNow wakes the goroutine if an Update waits for its retry timer.
func (d *deliverer) retryNow() bool {
	d.mu.Lock()
	waiting := d.next != nil
	d.mu.Unlock()
	if waiting {
		d.wake()
	}
	return waiting
}

// retryState is the generation whose last Apply failed (0: none) and the
// delay before its next attempt.
type retryState struct {
	failedGen uint64
	wait      time.Duration
}

func (d *deliverer) run(ctx context.Context) {
	retry := time.NewTimer(0)
	retry.Stop()
	defer retry.Stop()
	// paced wakes a Paced sink when it may take the next Update.
	paced := time.NewTimer(0)
	paced.Stop()
	defer paced.Stop()
	var lastStart time.Time
	var rs retryState
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.notify:
		case <-retry.C:
		case <-paced.C:
		}
		if !lastStart.IsZero() {
			if left := d.paceFor(d.peek()) - time.Since(lastStart); left > 0 {
				paced.Reset(left)
				continue
			}
		}
		u := d.take(rs.failedGen)
		if u == nil {
			continue
		}
		retry.Stop() // this attempt replaces the scheduled one
		lastStart = time.Now()
		d.apply(ctx, u, &rs, retry)
	}
}

// peek is the Update in the slot, left there.
func (d *deliverer) peek() *Update {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.next
}

// paceFor is how long after the last Apply began u may wait: the pace, but
// at most a quarter of u's validity, so pacing never holds a short-lived
// SVID until it has expired.
func (d *deliverer) paceFor(u *Update) time.Duration {
	if u == nil || d.pace == 0 {
		return d.pace
	}
	soonest := u.Leaf().NotAfter
	for _, svid := range u.SVIDs[1:] {
		if na := svid.Certificates[0].NotAfter; na.Before(soonest) {
			soonest = na
		}
	}
	return max(min(d.pace, soonest.Sub(u.ReceivedAt)/4), 0)
}

// take empties the slot, counting a retry of the generation that failed.
func (d *deliverer) take(failedGen uint64) *Update {
	d.mu.Lock()
	defer d.mu.Unlock()
	u := d.next
	d.next = nil
	if u != nil {
		d.status.NextRetryAt = time.Time{}
		if u.Generation == failedGen {
			d.status.Retries++
		}
	}
	return u
}

// apply hands u to the sink, records the outcome, and schedules a retry.
func (d *deliverer) apply(ctx context.Context, u *Update, rs *retryState, retry *time.Timer) {
	start := time.Now()
	err := d.sink.Apply(ctx, u)
	took := time.Since(start)
	end := start.Add(took)
	retrying := err != nil && ctx.Err() == nil && !errors.Is(err, ErrUpdateInPlace)
	if retrying {
		// A newer Update starts again from the shortest delay.
		if u.Generation != rs.failedGen {
			rs.wait = d.cfg.RetryBackoff
		} else {
			rs.wait = min(2*rs.wait, d.cfg.MaxRetryBackoff)
		}
		rs.failedGen = u.Generation
	} else {
		rs.failedGen = 0
	}
	st, prev := d.record(u, err, retrying, rs.wait, end, took)
	if retrying {
		retry.Reset(rs.wait)
	}
	d.logOutcome(ctx, u, err, retrying, rs.wait, took, prev, st)
	if d.cfg.OnSinkDone != nil {
		d.cfg.OnSinkDone(st)
	}
}

// record writes the outcome of one Apply into the status; prev is the
// status before, for the log line.
func (d *deliverer) record(u *Update, err error, retrying bool, wait time.Duration, end time.Time, took time.Duration) (st, prev SinkStatus) {
	d.mu.Lock()
	defer d.mu.Unlock()
	prev = d.status
	d.status.Err = err
	if err == nil {
		d.status.Generation = u.Generation
		d.status.AppliedAt = end
		d.status.Took = took
		d.status.Latency = end.Sub(u.ReceivedAt)
	} else {
		d.status.Failures++
	}
	if retrying {
		if !prev.Retrying() {
			d.status.RetryingSince = end
		}
		d.status.Attempts++
		d.status.NextRetryAt = end.Add(wait)
		if d.next == nil { // else a newer one waits, applied at once
			d.next = u
		}
	} else {
		d.status.RetryingSince, d.status.Attempts, d.status.NextRetryAt = time.Time{}, 0, time.Time{}
	}
	if d.next == nil {
		d.status.Pending = 0
	}
	return d.status, prev
}

func (d *deliverer) logOutcome(ctx context.Context, u *Update, err error, retrying bool, wait, took time.Duration, prev, st SinkStatus) {
	switch {
	case err == nil && prev.Retrying():
		d.log.Info("sink applied update after failed attempts", "generation", u.Generation,
			"failed_attempts", prev.Attempts, "failing_since", prev.RetryingSince.UTC().Format(time.RFC3339), "took", took)
	case err == nil:
		d.log.Debug("sink applied update", "generation", u.Generation, "took", took)
	case retrying:
		d.log.Error("sink failed to apply update; retrying", "generation", u.Generation, "error", err,
			"attempt", st.Attempts, "retry_in", wait)
	case ctx.Err() == nil:
		d.log.Error("sink failed to apply update", "generation", u.Generation, "error", err)
	}
}

func (d *deliverer) snapshot() SinkStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.status
}
