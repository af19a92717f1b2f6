package reload

import (
	"context"
)

// worker is a goroutine that exists only while there is work, so that a
// runner nobody submits to, and one whose servers are all up, holds none.
// The Runner has two: one runs submitted X.509 events, one watches for
// late servers. Both are guarded by Runner.state.
type worker struct {
	// ctx is the running goroutine's context; nil: none. One whose context
	// ended is replaced by the next start.
	ctx context.Context
	// idle is closed when the goroutine ends: it is open exactly while ctx
	// is not nil; nil before the first start.
	idle chan struct{}
}

// start runs loop on a new goroutine with ctx, unless one whose context
// is live runs already: that one finds the new work.
func (w *worker) start(ctx context.Context, loop func(context.Context)) {
	if w.ctx != nil && w.ctx.Err() == nil {
		return
	}
	if w.ctx == nil {
		w.idle = make(chan struct{})
	}
	w.ctx = ctx
	go loop(ctx)
}

// goOn reports whether the goroutine of ctx is to go on: nothing replaced
// it, ctx is live and workLeft. When it is not, that goroutine's turn ends.
func (w *worker) goOn(ctx context.Context, workLeft bool) bool {
	if w.ctx != ctx {
		return false // replaced: the new goroutine takes over
	}
	if workLeft && ctx.Err() == nil {
		return true
	}
	w.ctx = nil
	close(w.idle)
	return false
}

// Submit hands ev (an EventX509: a new set swapped in) to the runner and
// returns at once: the actions run on the runner's own goroutine, after
// any run in progress, so a hung consumer never holds back the swap that
// called Submit. An event still waiting when a newer one arrives is
// dropped: only the newest generation is reloaded. The worker runs with
// ctx; its outcome is in Stats and the log. JWT events go through Run.
func (r *Runner) Submit(ctx context.Context, ev Event) {
	r.state.Lock()
	defer r.state.Unlock()
	if r.pending != nil {
		r.log.Info("a newer generation replaces one whose reload had not started",
			"dropped", r.pending.Generation, "generation", ev.Generation)
	}
	r.pending = &ev
	r.submitted.start(ctx, r.runSubmitted)
}

// runSubmitted runs the submitted events one after the other until none
// is left or ctx ends.
func (r *Runner) runSubmitted(ctx context.Context) {
	for {
		ev, ok := r.takePending(ctx)
		if !ok {
			return
		}
		if err := r.Run(ctx, ev); err != nil && ctx.Err() == nil {
			r.log.Error("reload actions failed; the generation stays in place", "generation", ev.Generation, "error", err)
		}
	}
}

func (r *Runner) takePending(ctx context.Context) (ev Event, ok bool) {
	r.state.Lock()
	defer r.state.Unlock()
	if !r.submitted.goOn(ctx, r.pending != nil) {
		return Event{}, false
	}
	ev, r.pending = *r.pending, nil
	return ev, true
}

// Wait returns once every submitted event has been run (or its worker's
// context ended), or with ctx's error. --once waits so before it exits;
// tests wait so to read Stats.
func (r *Runner) Wait(ctx context.Context) error {
	r.state.Lock()
	idle := r.submitted.idle
	r.state.Unlock()
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
	r.state.Lock()
	defer r.state.Unlock()
	if r.pending == nil {
		return 0
	}
	return r.pending.Generation
}
