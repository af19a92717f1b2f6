package reload

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// overlapAction records how many of its runs were in progress at once.
type overlapAction struct {
	running, most, runs atomic.Int64
}

func (a *overlapAction) Name() string { return "overlap" }

func (a *overlapAction) Run(ctx context.Context, _ Event) error {
	n := a.running.Add(1)
	defer a.running.Add(-1)
	for {
		m := a.most.Load()
		if n <= m || a.most.CompareAndSwap(m, n) {
			break
		}
	}
	a.runs.Add(1)
	select {
	case <-time.After(5 * time.Millisecond):
	case <-ctx.Done():
	}
	return nil
}

// exclusiveExec is a reload command that fails if another run of it is in
// progress: it creates lock with O_EXCL (the shell's noclobber), holds it
// a moment and removes it, as a consumer that cannot take two reloads at
// once would.
func exclusiveExec(lock string) ExecAction {
	return ExecAction{Command: []string{"/bin/sh", "-c", `set -C; : > "$0" || exit 9; sleep 0.05; rm -f "$0"`, lock}}
}

// TestConcurrentTriggersNeverRunAnActionConcurrently: the X.509 writer
// (after a swap), the JWT writer (after a new token) and SIGHUP share a
// folder's Runner and may trigger it at the same moment; an action in both
// lists never runs twice at once. The same action run directly, without
// the runner, does overlap, so the test can see an overlap.
func TestConcurrentTriggersNeverRunAnActionConcurrently(t *testing.T) {
	t.Run("counted in process", func(t *testing.T) {
		a := &overlapAction{}
		r, _ := newRunner(t, Config{Actions: []Action{a}, JWTActions: []Action{a}})
		trigger(t, r, 8)
		if got := a.most.Load(); got != 1 {
			t.Errorf("at most %d runs at once through the runner, want 1", got)
		}
		if got := a.runs.Load(); got < 16 {
			t.Errorf("%d runs, want every X.509 and JWT trigger's (at least 16; a Rerun before the first X.509 run does nothing)", got)
		}

		direct := &overlapAction{}
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() { _ = direct.Run(t.Context(), Event{}) })
		}
		wg.Wait()
		if direct.most.Load() < 2 {
			t.Skip("runs started without the runner never overlapped: the check cannot tell")
		}
	})

	t.Run("an exec action that refuses a second reload", func(t *testing.T) {
		lock := filepath.Join(t.TempDir(), "reloading")
		a := exclusiveExec(lock)
		r, logs := newRunner(t, Config{Actions: []Action{a}, JWTActions: []Action{a}, Attempts: 1})
		errs := trigger(t, r, 3)
		for _, err := range errs {
			t.Errorf("a run through the runner failed: %v", err)
		}
		if strings.Contains(logs.String(), "failed") {
			t.Errorf("logs:\n%s\nwant no failed reload", logs.String())
		}
		if _, err := os.Lstat(lock); !os.IsNotExist(err) {
			t.Errorf("lock file left behind: %v", err)
		}

		// Without the runner, the command sees the overlap.
		var failed atomic.Int64
		var wg sync.WaitGroup
		for range 3 {
			wg.Go(func() {
				if a.Run(t.Context(), Event{}) != nil {
					failed.Add(1)
				}
			})
		}
		wg.Wait()
		if failed.Load() == 0 {
			t.Error("three direct runs at once all succeeded: the lock check proves nothing")
		}
	})
}

// trigger runs r from n goroutines each for an X.509 event, a JWT event
// and a Rerun, all at once, and returns the X.509 and Rerun errors (JWT
// failures are logged).
func trigger(t *testing.T, r *Runner, n int) []error {
	t.Helper()
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	note := func(err error) {
		if err != nil {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}
	}
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() { <-start; note(r.Run(t.Context(), Event{Kind: EventX509, Generation: uint64(i + 1)})) })
		wg.Go(func() { <-start; note(r.Run(t.Context(), Event{Kind: EventJWT})) })
		wg.Go(func() { <-start; note(r.Rerun(t.Context())) })
	}
	close(start)
	wg.Wait()
	return errs
}

// New refuses what cannot run and applies defaults (moved from filesink's
// Config tests).
func TestNewValidatesAndDefaults(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"nil action", Config{Actions: []Action{nil}}, "action 0: nil"},
		{"nil jwt action", Config{JWTActions: []Action{nil}}, "jwt action 0: nil"},
		{"empty exec", Config{Actions: []Action{ExecAction{}}}, "command: missing"},
		{"signal without pid file", Config{Actions: []Action{SignalAction{}}}, "pid file"},
		{"zero attempts", Config{Attempts: -1}, "attempts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New() error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
	r, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if r.cfg.Attempts != 3 || r.cfg.Backoff != 200*time.Millisecond || r.cfg.NoServerPoll != time.Second {
		t.Errorf("defaults not applied: %+v", r.cfg)
	}
}

// rememberingAction counts the memories New gives it.
type rememberingAction struct {
	memory *int
}

func (a *rememberingAction) Name() string                     { return "remembering" }
func (a *rememberingAction) Run(context.Context, Event) error { return nil }
func (a *rememberingAction) WithMemory() Action {
	return &rememberingAction{memory: new(int)}
}

// An action given for both events (the same pointer) keeps one memory in
// the runner, and not the caller's.
func TestAnActionForBothEventsHasOneMemory(t *testing.T) {
	a := &rememberingAction{}
	r, _ := newRunner(t, Config{Actions: []Action{a}, JWTActions: []Action{a}})
	x, j := r.cfg.Actions[0].(*rememberingAction), r.cfg.JWTActions[0].(*rememberingAction)
	if x != j || x == a || x.memory == nil {
		t.Errorf("X.509 copy %p, JWT copy %p, caller's %p: want one copy with memory, not the caller's", x, j, a)
	}
}
