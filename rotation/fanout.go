package rotation

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// Defaults of Config.RetryBackoff and Config.MaxRetryBackoff. The maximum
// is short on purpose: a disk that was full is caught up within 5 s of
// being freed, however long it was full, and a failed attempt costs a few
// KiB of writes.
const (
	DefaultRetryBackoff    = time.Second
	DefaultMaxRetryBackoff = 4 * time.Second
)

// ErrUpdateInPlace is wrapped by an Apply error that came after the Update
// was already in place: a step that follows it failed (a folder's reload
// action, which has its own retries). Such an Update is not applied again,
// which would only repeat the part that worked; the error is reported as
// any other.
var ErrUpdateInPlace = errors.New("update in place, a later step failed")

// SinkStatus is what one sink did with the newest Update handed to it.
type SinkStatus struct {
	Name string
	// Generation is the last generation the sink applied without error.
	Generation uint64
	// Pending is the newest generation handed to the sink and not yet
	// applied; while the sink is retrying, the one its next attempt applies.
	Pending uint64
	// Err is the error of the last Apply, nil after a success. While the
	// sink is retrying it is the last attempt's error.
	Err error
	// AppliedAt and Took describe the last successful Apply.
	AppliedAt time.Time
	Took      time.Duration
	// Latency is, for the last successful Apply, the time from the
	// Workload API delivering the Update (its ReceivedAt) to the end of
	// Apply: queueing behind a slow Apply and failed attempts included.
	Latency time.Duration
	// Failures counts the failed Applies since start, retries included.
	Failures uint64
	// RetryingSince is when the current run of failed Applies began (the
	// first failure after a success, whatever its generation); zero when
	// the sink is not retrying.
	RetryingSince time.Time
	// Attempts counts the failed Applies since RetryingSince.
	Attempts uint64
	// NextRetryAt is when the sink applies Pending again; zero when no
	// retry is scheduled (not retrying, or an attempt is running now).
	NextRetryAt time.Time
	// Retries counts the Applies since start that repeated an Update
	// whose previous Apply had failed.
	Retries uint64
}

// Retrying reports whether the sink is waiting to apply an Update again
// after a failed Apply.
func (st SinkStatus) Retrying() bool { return !st.RetryingSince.IsZero() }

// deliverer feeds one sink from its own goroutine. It holds at most one
// waiting Update: a slow sink skips the ones it could not take in time and
// gets the newest, and never holds up the source or another sink. An
// Update whose Apply failed goes back into that slot, and a timer wakes
// the goroutine to apply it again, unless a newer one has replaced it.
type deliverer struct {
	sink       Sink
	log        *slog.Logger
	notify     chan struct{}
	onDone     func(SinkStatus)
	backoff    time.Duration
	maxBackoff time.Duration
	// pace is the sink's MinApplyInterval (Paced); 0: not paced.
	pace time.Duration

	mu     sync.Mutex
	next   *Update
	status SinkStatus
}

func newDeliverer(sink Sink, cfg Config) *deliverer {
	d := &deliverer{
		sink:       sink,
		log:        cfg.Logger.With("sink", sink.Name()),
		notify:     make(chan struct{}, 1),
		onDone:     cfg.OnSinkDone,
		backoff:    cfg.RetryBackoff,
		maxBackoff: cfg.MaxRetryBackoff,
		status:     SinkStatus{Name: sink.Name()},
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

// retryNow wakes the goroutine if an Update waits for its retry timer, and
// reports whether one did.
func (d *deliverer) retryNow() bool {
	d.mu.Lock()
	waiting := d.next != nil
	d.mu.Unlock()
	if waiting {
		d.wake()
	}
	return waiting
}

// retryState is the run goroutine's own view of a failing Update: the
// generation whose last Apply failed (0: none) and the delay before its
// next attempt.
type retryState struct {
	failedGen uint64
	wait      time.Duration
}

func (d *deliverer) run(ctx context.Context) {
	retry := time.NewTimer(0)
	retry.Stop()
	defer retry.Stop()
	// paced wakes the goroutine when a Paced sink may take the next
	// Update; lastStart is when its last Apply began.
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
				// The slot keeps the newest Update until then.
				paced.Reset(left)
				continue
			}
		}
		u := d.take(rs.failedGen)
		if u == nil {
			continue
		}
		// Whatever woke us, this attempt replaces the scheduled one.
		retry.Stop()
		lastStart = time.Now()
		d.apply(ctx, u, &rs, retry)
	}
}

// peek is the Update in the slot (nil if none), left there.
func (d *deliverer) peek() *Update {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.next
}

// paceFor is how long after the last Apply began u may wait: the sink's
// pace, but never more than a quarter of u's validity as it arrived, so
// that pacing never holds a short-lived SVID until it has expired (dev's
// one-second SVIDs; a real agent's last minutes before an outage).
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

// take empties the slot and returns what was in it (nil if nothing),
// counting a retry when it is the generation that failed last.
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

// apply hands u to the sink, records the outcome, and on a failure that
// can be retried puts u back in the slot and sets retry.
func (d *deliverer) apply(ctx context.Context, u *Update, rs *retryState, retry *time.Timer) {
	start := time.Now()
	err := d.sink.Apply(ctx, u)
	took := time.Since(start)
	end := start.Add(took)
	retrying := err != nil && ctx.Err() == nil && !errors.Is(err, ErrUpdateInPlace)
	if retrying {
		// A newer Update starts again from the shortest delay.
		if u.Generation != rs.failedGen {
			rs.wait = d.backoff
		} else {
			rs.wait = min(2*rs.wait, d.maxBackoff)
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
	if d.onDone != nil {
		d.onDone(st)
	}
}

// record writes the outcome of one Apply into the status and returns it,
// with the status as it was before (for the log line).
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
		// Unless a newer Update came in meanwhile (it is applied at
		// once), the slot takes this one back for the retry.
		if d.next == nil {
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
