package reload

import (
	"errors"
	"slices"
	"sync"
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

// statsRecorder has its own lock: Stats must answer while a run (which may
// take long) holds the runner's.
type statsRecorder struct {
	mu      sync.Mutex
	actions []ActionStats
}

func (r *statsRecorder) init(actions []Action) {
	r.actions = make([]ActionStats, len(actions))
	for i, a := range actions {
		r.actions[i].Action = a.Name()
	}
}

func (r *statsRecorder) attempted(i int, generation uint64, attempt int, err error, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if i < 0 || i >= len(r.actions) {
		return
	}
	a := &r.actions[i]
	a.Generation, a.Attempts, a.Err, a.At = generation, attempt, err, at
	if a.Failed() {
		a.Failures++
	}
}

// begin marks action i as running for generation since at.
func (r *statsRecorder) begin(i int, generation uint64, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if i >= 0 && i < len(r.actions) {
		r.actions[i].RunningSince, r.actions[i].RunningGeneration = at, generation
	}
}

// end marks action i as no longer running.
func (r *statsRecorder) end(i int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if i >= 0 && i < len(r.actions) {
		r.actions[i].RunningSince, r.actions[i].RunningGeneration = time.Time{}, 0
	}
}

// Stats returns what each X.509 action has done, in Config.Actions order.
func (r *Runner) Stats() []ActionStats {
	r.stats.mu.Lock()
	defer r.stats.mu.Unlock()
	return slices.Clone(r.stats.actions)
}
