package reload

import (
	"context"
)

// worker is a goroutine that exists only while there is work, so an idle
// Runner holds none; guarded by Runner.state.
type worker struct {
	// ctx is the running goroutine's (nil: none); one that ended is
	// replaced by the next start.
	ctx context.Context
	// idle is closed when the goroutine ends; nil before the first start.
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

// goOn reports whether the goroutine of ctx goes on: nothing replaced it,
// ctx is live and workLeft.
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

// Submit hands an EventX509 to the runner's goroutine (running with ctx)
// and returns at once, so a hung consumer never holds back a swap. An
// event still waiting when a newer one arrives is dropped.
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
// context ended), or with ctx's error.
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

// Pending is the generation submitted and not yet started (0: none).
func (r *Runner) Pending() uint64 {
	r.state.Lock()
	defer r.state.Unlock()
	if r.pending == nil {
		return 0
	}
	return r.pending.Generation
}
