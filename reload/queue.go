package reload

import (
	"context"
	"time"
)

// queue is the X.509 event that waits for the runner's worker goroutine:
// one slot, the newest event replacing an older one that has not started
// (rotation's latest-wins mailbox, one level down). The worker exists only
// while there is work, so a runner nobody submits to holds no goroutine.
type queue struct {
	// pending is the event the worker runs next; nil: none.
	pending *Event
	// worker is the context of the worker goroutine; nil: none. One whose
	// context ended is replaced by the next Submit.
	worker context.Context
	// idle is closed when the worker has nothing left to do; nil while
	// idle since start.
	idle chan struct{}
	// lastSignal is when a signal action last sent its signal.
	lastSignal time.Time
}

// Submit hands ev (an EventX509: a new set swapped in) to the runner and
// returns at once: the actions run on the runner's own goroutine, after
// any run in progress, so a hung consumer never holds back the swap that
// called Submit. An event still waiting when a newer one arrives is
// dropped: only the newest generation is reloaded. The worker runs with
// ctx; its outcome is in Stats and the log. JWT events go through Run.
func (r *Runner) Submit(ctx context.Context, ev Event) {
	r.qmu.Lock()
	defer r.qmu.Unlock()
	q := &r.q
	if q.pending != nil {
		r.log.Info("a newer generation replaces one whose reload had not started",
			"dropped", q.pending.Generation, "generation", ev.Generation)
	}
	q.pending = &ev
	if q.idle == nil || closed(q.idle) {
		q.idle = make(chan struct{})
	}
	if q.worker != nil && q.worker.Err() == nil {
		return
	}
	q.worker = ctx
	go r.work(ctx)
}

// work runs the submitted events one after the other until none is left
// or ctx ends.
func (r *Runner) work(ctx context.Context) {
	for {
		ev, ok := r.take(ctx)
		if !ok {
			return
		}
		if err := r.Run(ctx, ev); err != nil && ctx.Err() == nil {
			r.log.Error("reload actions failed; the generation stays in place", "generation", ev.Generation, "error", err)
		}
	}
}

// take returns the pending event, or ends the worker of ctx (ok false)
// when there is none or ctx has ended.
func (r *Runner) take(ctx context.Context) (ev Event, ok bool) {
	r.qmu.Lock()
	defer r.qmu.Unlock()
	q := &r.q
	if q.worker != ctx {
		return Event{}, false // replaced: the new worker takes over
	}
	if q.pending == nil || ctx.Err() != nil {
		q.worker = nil
		if q.idle != nil && !closed(q.idle) {
			close(q.idle)
		}
		return Event{}, false
	}
	ev, q.pending = *q.pending, nil
	return ev, true
}

// Wait returns once every submitted event has been run (or its worker's
// context ended), or with ctx's error. --once waits so before it exits;
// tests wait so to read Stats.
func (r *Runner) Wait(ctx context.Context) error {
	r.qmu.Lock()
	idle := r.q.idle
	r.qmu.Unlock()
	if idle == nil {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Pending is the generation submitted and not yet started (0: none):
// while an action hangs, the newest set is on disk and this waits.
func (r *Runner) Pending() uint64 {
	r.qmu.Lock()
	defer r.qmu.Unlock()
	if r.q.pending == nil {
		return 0
	}
	return r.q.pending.Generation
}

// SignalledWithin reports whether a signal action of this runner sent its
// signal less than d ago (Config.Now). A SIGHUP the bridge gets then may
// be that signal's echo (see internal/bridge's onHangup).
func (r *Runner) SignalledWithin(d time.Duration) bool {
	r.qmu.Lock()
	defer r.qmu.Unlock()
	return !r.q.lastSignal.IsZero() && r.cfg.Now().Sub(r.q.lastSignal) < d
}

// noteSignal records that a (signal) action succeeded just now.
func (r *Runner) noteSignal(a Action) {
	if _, ok := a.(SignalAction); !ok {
		return
	}
	r.qmu.Lock()
	r.q.lastSignal = r.cfg.Now()
	r.qmu.Unlock()
}

func closed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
