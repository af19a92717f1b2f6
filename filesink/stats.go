package filesink

import (
	"errors"
	"sync"
	"time"
)

// Stats are a folder's counters and the last result of each reload
// action, for metrics and `sds-bridge status`.
type Stats struct {
	// WriteFailures counts Applies that left the folder as it was (refused
	// material, a failed write or swap); the consumers keep the previous set.
	WriteFailures uint64
	// LastWriteErr is the error of the last failed write; nil after a
	// successful swap.
	LastWriteErr error
	// Actions has one entry per configured action, in order.
	Actions []ActionStats
}

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
}

// NoServer reports whether the latest run found no server to reload: no
// failure, the server reads the files in place when it starts.
func (a ActionStats) NoServer() bool { return errors.Is(a.Err, ErrNoServer) }

// Failed reports whether the latest run failed against a server that is
// there (a refused signal, an SQL error, a command's exit status).
func (a ActionStats) Failed() bool { return a.Err != nil && !a.NoServer() }

// statsRecorder has its own lock: Stats must answer while an Apply (and
// its actions, which may take long) holds the folder's.
type statsRecorder struct {
	mu    sync.Mutex
	stats Stats
}

func (r *statsRecorder) init(actions []Action) {
	r.stats.Actions = make([]ActionStats, len(actions))
	for i, a := range actions {
		r.stats.Actions[i].Action = a.Name()
	}
}

func (r *statsRecorder) written(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stats.LastWriteErr = err
	if err != nil {
		r.stats.WriteFailures++
	}
}

func (r *statsRecorder) attempted(i int, generation uint64, attempt int, err error, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if i < 0 || i >= len(r.stats.Actions) {
		return
	}
	a := &r.stats.Actions[i]
	a.Generation, a.Attempts, a.Err, a.At = generation, attempt, err, at
	if a.Failed() {
		a.Failures++
	}
}

// Stats returns the folder's counters and last action results.
func (f *Folder) Stats() Stats {
	f.stats.mu.Lock()
	defer f.stats.mu.Unlock()
	s := f.stats.stats
	s.Actions = append([]ActionStats(nil), s.Actions...)
	return s
}
