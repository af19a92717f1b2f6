package filesink

import (
	"sync"

	"github.com/sds-bridge/sds-bridge/reload"
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
	// Actions has one entry per X.509 reload action, in order (the
	// folder's reload.Runner reports them).
	Actions []reload.ActionStats
	// ReloadPending is the generation swapped in whose actions wait for
	// a run in progress (a hung consumer); 0 when none waits.
	ReloadPending uint64
}

// writeStats has its own lock: Stats must answer while an Apply (and its
// actions, which may take long) holds the folder's.
type writeStats struct {
	mu       sync.Mutex
	failures uint64
	lastErr  error
}

func (r *writeStats) written(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastErr = err
	if err != nil {
		r.failures++
	}
}

// Stats returns the folder's counters and last action results.
func (f *Folder) Stats() Stats {
	f.stats.mu.Lock()
	s := Stats{WriteFailures: f.stats.failures, LastWriteErr: f.stats.lastErr}
	f.stats.mu.Unlock()
	if f.cfg.Reload != nil {
		s.Actions = f.cfg.Reload.Stats()
		s.ReloadPending = f.cfg.Reload.Pending()
	}
	return s
}
