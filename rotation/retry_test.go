package rotation

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sds-bridge/sds-bridge/internal/devapi"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// faultySink returns fault's answer for every Apply and records the
// generation of each.
type faultySink struct {
	mu      sync.Mutex
	fault   func(u *Update) error
	applied []uint64
}

func (s *faultySink) Name() string { return "flaky" }

func (s *faultySink) Apply(_ context.Context, u *Update) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applied = append(s.applied, u.Generation)
	if s.fault == nil {
		return nil
	}
	return s.fault(u)
}

func (s *faultySink) setFault(f func(*Update) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = f
}

func (s *faultySink) generations() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.applied)
}

func diskFull(*Update) error { return errors.New("no space left on device") }

// sinkStatus waits until the only sink's status satisfies cond.
func (h *harness) sinkStatus(what string, cond func(SinkStatus) bool) SinkStatus {
	h.t.Helper()
	var st SinkStatus
	testkit.Eventually(h.t, what, func() bool {
		st = h.src.SinkStatuses()[0]
		return cond(st)
	})
	return st
}

// A sink whose Apply fails a few times ends up holding the Update without
// any newer one being offered (invariant 8: nothing waits for the next
// rotation), and its status is clean again.
func TestFailedApplyIsRetriedUntilTheSinkHoldsTheUpdate(t *testing.T) {
	sink := &faultySink{}
	left := 3
	sink.setFault(func(*Update) error {
		if left == 0 {
			return nil
		}
		left--
		return errors.New("no space left on device")
	})
	h := start(t, Config{RetryBackoff: time.Millisecond, MaxRetryBackoff: 4 * time.Millisecond}, sink)

	h.push(h.issue(devapi.SVIDOptions{}))
	st := h.sinkStatus("generation 1 applied without a new update", func(st SinkStatus) bool { return st.Generation == 1 })

	if got := sink.generations(); !slices.Equal(got, []uint64{1, 1, 1, 1}) {
		t.Errorf("the sink was given generations %v, want generation 1 four times", got)
	}
	if cur := h.src.Current(); cur.Generation != 1 {
		t.Fatalf("current generation %d: another update came, proving nothing", cur.Generation)
	}
	if st.Err != nil || st.Failures != 3 || st.Retries != 3 || st.Pending != 0 || st.Retrying() ||
		st.Attempts != 0 || !st.NextRetryAt.IsZero() {
		t.Errorf("status after recovery = %+v, want 3 failures and 3 retries, nothing pending or retrying", st)
	}
}

// While a sink retries, its status says since when, how often, when next
// and why; each retry waits twice as long, up to the maximum. RetryNow
// retries at once. A newer Update is applied at once, without waiting for
// the retry, and starts again from the shortest delay; the older one is
// never applied again.
func TestRetryStatusBackoffAndANewerUpdateSupersedingIt(t *testing.T) {
	sink := &faultySink{fault: diskFull}
	// Minutes: every retry here is RetryNow's, so the schedule can be read
	// from the status without waiting for it.
	h := start(t, Config{RetryBackoff: time.Minute, MaxRetryBackoff: 3 * time.Minute}, sink)
	// wantNext checks that the retry was scheduled wait after the attempt
	// that failed, which ended between since and now.
	wantNext := func(st SinkStatus, since time.Time, wait time.Duration) {
		t.Helper()
		now := time.Now()
		if st.NextRetryAt.Before(since.Add(wait)) || st.NextRetryAt.After(now.Add(wait)) {
			t.Errorf("attempt %d: next retry at %s, want %s after the failure (between %s and %s)",
				st.Attempts, st.NextRetryAt, wait, since, now)
		}
	}

	begin := time.Now()
	h.push(h.issue(devapi.SVIDOptions{}))
	first := h.sinkStatus("first failure", func(st SinkStatus) bool { return st.Attempts == 1 })
	if !first.Retrying() || first.RetryingSince.Before(begin) || first.Pending != 1 || first.Generation != 0 ||
		first.Err == nil || first.Err.Error() != "no space left on device" || first.Retries != 0 {
		t.Fatalf("status after the first failure = %+v, want retrying generation 1 with the error", first)
	}
	if !first.NextRetryAt.Equal(first.RetryingSince.Add(time.Minute)) {
		t.Errorf("first retry at %s, want a minute after the failure at %s", first.NextRetryAt, first.RetryingSince)
	}

	for _, step := range []struct {
		attempts uint64
		wait     time.Duration
	}{{2, 2 * time.Minute}, {3, 3 * time.Minute}, {4, 3 * time.Minute}} {
		before := time.Now()
		if woken := h.src.RetryNow(); !slices.Equal(woken, []string{"flaky"}) {
			t.Fatalf("RetryNow woke %v, want [flaky]", woken)
		}
		st := h.sinkStatus(fmt.Sprintf("failed attempt %d", step.attempts), func(st SinkStatus) bool { return st.Attempts == step.attempts })
		wantNext(st, before, step.wait)
		if !st.RetryingSince.Equal(first.RetryingSince) || st.Retries != step.attempts-1 || st.Pending != 1 {
			t.Errorf("status after attempt %d = %+v, want retrying since %s, %d retries", step.attempts, st, first.RetryingSince, step.attempts-1)
		}
	}

	// A newer Update, no RetryNow: applied at once, not in 3 minutes. It
	// fails too; its retry starts from a minute again.
	before := time.Now()
	h.push(h.issue(devapi.SVIDOptions{}))
	st := h.sinkStatus("generation 2 tried", func(st SinkStatus) bool { return st.Attempts == 5 })
	if st.Pending != 2 || st.Retries != 3 || !st.RetryingSince.Equal(first.RetryingSince) {
		t.Errorf("status after generation 2 failed = %+v, want generation 2 pending, 3 retries, retrying since %s", st, first.RetryingSince)
	}
	wantNext(st, before, time.Minute)

	sink.setFault(nil)
	h.src.RetryNow()
	st = h.sinkStatus("generation 2 applied", func(st SinkStatus) bool { return st.Generation == 2 })
	if st.Retrying() || st.Err != nil || st.Retries != 4 || st.Failures != 5 || st.Pending != 0 {
		t.Errorf("status after recovery = %+v", st)
	}
	if got := sink.generations(); !slices.Equal(got, []uint64{1, 1, 1, 1, 2, 2}) {
		t.Errorf("the sink was given generations %v, want 1 four times then 2 twice", got)
	}
	if woken := h.src.RetryNow(); len(woken) != 0 {
		t.Errorf("RetryNow woke %v although every sink holds the current update", woken)
	}
}

// An Apply error wrapping ErrUpdateInPlace (a folder swapped in, its
// reload action failed) is reported, not retried: applying the Update
// again would only redo what worked.
func TestAnUpdateInPlaceIsNotAppliedAgain(t *testing.T) {
	sink := &faultySink{fault: func(u *Update) error {
		if u.Generation == 1 {
			return fmt.Errorf("reload refused: %w", ErrUpdateInPlace)
		}
		return nil
	}}
	h := start(t, Config{RetryBackoff: time.Millisecond}, sink)

	h.push(h.issue(devapi.SVIDOptions{}))
	st := h.sinkStatus("generation 1 failed", func(st SinkStatus) bool { return st.Failures == 1 })
	if !errors.Is(st.Err, ErrUpdateInPlace) || st.Retrying() || st.Pending != 0 || !st.NextRetryAt.IsZero() {
		t.Errorf("status = %+v, want the error reported and no retry", st)
	}
	if woken := h.src.RetryNow(); len(woken) != 0 {
		t.Errorf("RetryNow woke %v for an update that is in place", woken)
	}

	h.push(h.issue(devapi.SVIDOptions{}))
	h.sinkStatus("generation 2 applied", func(st SinkStatus) bool { return st.Generation == 2 })
	if got := sink.generations(); !slices.Equal(got, []uint64{1, 2}) {
		t.Errorf("the sink was given generations %v, want [1 2]", got)
	}
	if st := h.src.SinkStatuses()[0]; st.Retries != 0 || st.Err != nil {
		t.Errorf("status = %+v, want no retries", st)
	}
}

// Cancelling the source ends a sink's retries with it (goleak checks that
// nothing is left behind).
func TestRetriesStopWithTheSource(t *testing.T) {
	sink := &faultySink{fault: diskFull}
	h := start(t, Config{RetryBackoff: time.Millisecond, MaxRetryBackoff: time.Millisecond}, sink)
	h.push(h.issue(devapi.SVIDOptions{}))
	h.sinkStatus("a few retries", func(st SinkStatus) bool { return st.Retries >= 3 })
}

func TestRetryBackoffIsChecked(t *testing.T) {
	for _, cfg := range []Config{
		{RetryBackoff: -time.Second},
		{RetryBackoff: time.Minute, MaxRetryBackoff: time.Second},
	} {
		cfg.Address = "unix:///nowhere"
		if _, err := New(cfg); err == nil {
			t.Errorf("New(backoff %s, max %s) accepted", cfg.RetryBackoff, cfg.MaxRetryBackoff)
		}
	}
	// Unset, the maximum is the default, or the backoff if that is longer.
	for backoff, wantMax := range map[time.Duration]time.Duration{
		0: DefaultMaxRetryBackoff, 2 * time.Second: DefaultMaxRetryBackoff, time.Minute: time.Minute,
	} {
		src, err := New(Config{Address: "unix:///nowhere", RetryBackoff: backoff})
		if err != nil {
			t.Fatal(err)
		}
		if want := cmp.Or(backoff, DefaultRetryBackoff); src.cfg.RetryBackoff != want || src.cfg.MaxRetryBackoff != wantMax {
			t.Errorf("RetryBackoff %s: backoff %s up to %s, want %s up to %s", backoff, src.cfg.RetryBackoff, src.cfg.MaxRetryBackoff, want, wantMax)
		}
	}
}
