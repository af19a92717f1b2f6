package reload

import (
	"errors"
	"slices"
	"time"
)

// ActionStats is what one reload action has done.
type ActionStats struct {
	// Action is the action's Name.
	Action string
	// Generation (0: never ran), Attempts, Err and At (when the last
	// attempt ended) describe the latest run.
	Generation uint64
	Attempts   int
	Err        error
	At         time.Time
	// Failures counts failed attempts since start (ErrNoServer is none).
	Failures uint64
	// RunningSince is when the run in progress began, for
	// RunningGeneration; zero when not running. A hung consumer shows here.
	RunningSince      time.Time
	RunningGeneration uint64
}

// Running reports whether the action is running now.
func (a ActionStats) Running() bool { return !a.RunningSince.IsZero() }

// NoServer reports whether the latest run found no server to reload.
func (a ActionStats) NoServer() bool { return errors.Is(a.Err, ErrNoServer) }

// Failed reports whether the latest run failed against a server that is
// there (a refused signal, an SQL error, a command's exit status).
func (a ActionStats) Failed() bool { return a.Err != nil && !a.NoServer() }

// running records that action i runs for generation since; zero: it stops.
func (r *Runner) running(i int, generation uint64, since time.Time) {
	r.state.Lock()
	defer r.state.Unlock()
	r.stats[i].RunningSince, r.stats[i].RunningGeneration = since, generation
}

// attempted records the outcome of an attempt of action i. An attempt that
// met a server (or failed) ends the wait for a late one.
func (r *Runner) attempted(i int, generation uint64, attempt int, err error) {
	r.state.Lock()
	defer r.state.Unlock()
	a := &r.stats[i]
	a.Generation, a.Attempts, a.Err, a.At = generation, attempt, err, r.cfg.Now()
	if a.Failed() {
		a.Failures++
	}
	if !a.NoServer() {
		r.noServer[i] = false
	}
}

func (r *Runner) noteSignal(a Action) {
	if _, ok := a.(SignalAction); !ok {
		return
	}
	r.state.Lock()
	defer r.state.Unlock()
	r.lastSignal = r.cfg.Now()
}

// Stats returns what each X.509 action has done.
func (r *Runner) Stats() []ActionStats {
	r.state.Lock()
	defer r.state.Unlock()
	return slices.Clone(r.stats)
}

// SignalledWithin reports whether a signal action sent its signal less
// than d ago: a SIGHUP the bridge gets then may be its echo.
func (r *Runner) SignalledWithin(d time.Duration) bool {
	r.state.Lock()
	defer r.state.Unlock()
	return !r.lastSignal.IsZero() && r.cfg.Now().Sub(r.lastSignal) < d
}
