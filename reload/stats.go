package reload

import (
	"errors"
	"slices"
	"time"
)

// ActionStats is what one reload action has done.
type ActionStats struct {
	// Action is the action's Name (passwords redacted).
	Action string
	// Generation, Attempts, Err and At describe its latest run: the
	// generation it ran for (0: never ran), how many attempts that took so
	// far, the last attempt's error and when that attempt ended. Err is nil
	// when it succeeded, and wraps ErrNoServer when there was no server to
	// reload, which is not a failure (see NoServer).
	Generation uint64
	Attempts   int
	Err        error
	At         time.Time
	// Failures counts failed attempts since start; finding no server to
	// reload is not one.
	Failures uint64
	// RunningSince is when the run in progress began (its first
	// attempt), for RunningGeneration; zero when the action is not
	// running. A hung consumer shows here: the folder's swaps go on.
	RunningSince      time.Time
	RunningGeneration uint64
}

// Running reports whether the action is running now.
func (a ActionStats) Running() bool { return !a.RunningSince.IsZero() }

// NoServer reports whether the latest run found no server to reload: no
// failure, the server reads the files in place when it starts.
func (a ActionStats) NoServer() bool { return errors.Is(a.Err, ErrNoServer) }

// Failed reports whether the latest run failed against a server that is
// there (a refused signal, an SQL error, a command's exit status).
func (a ActionStats) Failed() bool { return a.Err != nil && !a.NoServer() }

// running records that action i runs for generation since the time given;
// a zero time records that it does not run.
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

// noteSignal records that action a succeeded just now, if it is a signal
// action.
func (r *Runner) noteSignal(a Action) {
	if _, ok := a.(SignalAction); !ok {
		return
	}
	r.state.Lock()
	defer r.state.Unlock()
	r.lastSignal = r.cfg.Now()
}

// Stats returns what each X.509 action has done, in Config.Actions order.
func (r *Runner) Stats() []ActionStats {
	r.state.Lock()
	defer r.state.Unlock()
	return slices.Clone(r.stats)
}

// SignalledWithin reports whether a signal action of this runner sent its
// signal less than d ago (Config.Now). A SIGHUP the bridge gets then may
// be that signal's echo (see internal/bridge's onHangup).
func (r *Runner) SignalledWithin(d time.Duration) bool {
	r.state.Lock()
	defer r.state.Unlock()
	return !r.lastSignal.IsZero() && r.cfg.Now().Sub(r.lastSignal) < d
}
