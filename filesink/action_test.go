package filesink

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sds-bridge/sds-bridge/internal/devapi"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
	"github.com/sds-bridge/sds-bridge/reload"
)

// scriptedAction fails a given number of times, then succeeds, recording
// every call.
type scriptedAction struct {
	name     string
	failures int
	onRun    func(call int)

	mu     sync.Mutex
	calls  int
	events []reload.Event
	log    *[]string
}

func (a *scriptedAction) Name() string { return a.name }

func (a *scriptedAction) Run(ctx context.Context, e reload.Event) error {
	a.mu.Lock()
	a.calls++
	call := a.calls
	a.events = append(a.events, e)
	if a.log != nil {
		*a.log = append(*a.log, a.name)
	}
	a.mu.Unlock()
	if a.onRun != nil {
		a.onRun(call)
	}
	if call <= a.failures {
		return fmt.Errorf("%s: failure %d", a.name, call)
	}
	return nil
}

// waitActions waits until the folder's reload actions have run for every
// generation handed to them.
func waitActions(t *testing.T, f *Folder) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testkit.Timeout)
	defer cancel()
	if err := f.cfg.Reload.Wait(ctx); err != nil {
		t.Fatalf("reload actions still running after %s: %v", testkit.Timeout, err)
	}
}

// The folder's runner runs after the swap is durable, with the swapped
// set's identity in its event; its failures leave the new generation in
// place and show in Stats, not in Apply's result (the swap went well); a
// failed write runs nothing.
func TestActionsRunAfterSwapWithRetries(t *testing.T) {
	c := newCA(t, "example.org")
	svid := c.issue(t, devapi.SVIDOptions{})

	t.Run("in order, retried, with the event", func(t *testing.T) {
		var order []string
		first := &scriptedAction{name: "first", failures: 2, log: &order}
		second := &scriptedAction{name: "second", log: &order}
		logs := &syncBuffer{}
		lg := slog.New(slog.NewTextHandler(logs, nil))
		f, _ := newFolder(t, Config{Logger: lg, Reload: newRunner(t, reload.Config{Actions: []reload.Action{first, second}, Backoff: time.Millisecond, Logger: lg})})
		// The action sees the new generation on disk when it runs.
		first.onRun = func(int) {
			m, err := Inspect(f.InspectConfig(0))
			if err != nil || m.Generation != 5 {
				order = append(order, fmt.Sprintf("not swapped yet: %v", err))
			}
		}
		if err := f.Apply(t.Context(), update(5, svid, c.Bundle())); err != nil {
			t.Fatal(err)
		}
		waitActions(t, f)
		if want := []string{"first", "first", "first", "second"}; !slices.Equal(order, want) {
			t.Errorf("calls = %v, want %v", order, want)
		}
		want := reload.Event{Kind: reload.EventX509, Dir: f.Dir(), Generation: 5, SPIFFEID: svid.ID.String(), NotAfter: svid.Certificates[0].NotAfter.UTC()}
		if second.events[0] != want {
			t.Errorf("event = %+v, want %+v", second.events[0], want)
		}
		if got := strings.Count(logs.String(), "reload action failed"); got != 2 {
			t.Errorf("%d failure log lines, want 2", got)
		}
	})

	t.Run("gives up, later actions still run, swap stays", func(t *testing.T) {
		broken := &scriptedAction{name: "broken", failures: 100}
		next := &scriptedAction{name: "next"}
		f, _ := newFolder(t, Config{Reload: newRunner(t, reload.Config{Actions: []reload.Action{broken, next}, Attempts: 2, Backoff: time.Millisecond})})
		if err := f.Apply(t.Context(), update(8, svid, c.Bundle())); err != nil {
			t.Fatalf("Apply() = %v: the swap went well, an action's failure is not the swap's", err)
		}
		waitActions(t, f)
		if broken.calls != 2 || next.calls != 1 {
			t.Errorf("calls: broken %d, next %d; want 2 and 1", broken.calls, next.calls)
		}
		st := f.Stats()
		if a := st.Actions[0]; !a.Failed() || a.Generation != 8 || a.Attempts != 2 || !strings.Contains(a.Err.Error(), "broken: failure 2") {
			t.Errorf("broken's stats = %+v, want failed for generation 8 after 2 attempts", a)
		}
		if st.WriteFailures != 0 {
			t.Errorf("an action's failure counted as a write failure: %+v", st)
		}
		if m, err := Inspect(f.InspectConfig(0)); err != nil || m.Generation != 8 {
			t.Errorf("after a failed action Inspect = %+v, %v; want generation 8 in place", m, err)
		}
	})

	t.Run("no action after a failed write", func(t *testing.T) {
		blocker := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(blocker, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		a := &scriptedAction{name: "a"}
		f, _ := newFolder(t, Config{Dir: filepath.Join(blocker, "creds"), Reload: newRunner(t, reload.Config{Actions: []reload.Action{a}})})
		if err := f.Apply(t.Context(), update(1, svid, c.Bundle())); err == nil {
			t.Fatal("Apply() succeeded with a regular file where the folder's parent should be")
		}
		waitActions(t, f)
		if a.calls != 0 {
			t.Errorf("action ran %d times after a failed write", a.calls)
		}
	})
}

// hangingAction blocks every run until release is closed (or its context
// ends), as a reload against a PostgreSQL that accepts connections and
// never answers does; it records the generations it was run for and how
// many runs overlapped.
type hangingAction struct {
	started chan uint64
	release chan struct{}

	mu          sync.Mutex
	generations []uint64
	running     int
	most        int
}

func (a *hangingAction) Name() string { return "hanging" }

func (a *hangingAction) Run(ctx context.Context, e reload.Event) error {
	a.mu.Lock()
	a.generations = append(a.generations, e.Generation)
	a.running++
	a.most = max(a.most, a.running)
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.running--
		a.mu.Unlock()
	}()
	a.started <- e.Generation
	select {
	case <-a.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestAHungReloadActionNeverHoldsBackASwap (issue 19, fault 1): while the
// folder's reload action hangs, every further Apply swaps its set in at
// once, the running action and the generation waiting for it show in
// Stats, and once the action returns the newest generation alone is
// reloaded (the ones in between are skipped), never two runs at once.
// Before, Apply ran the actions inline, so the second Apply waited for
// the hung consumer and the folder kept an old set (expired, with short
// SVIDs).
func TestAHungReloadActionNeverHoldsBackASwap(t *testing.T) {
	t.Parallel()
	c := newCA(t, "example.org")
	a := &hangingAction{started: make(chan uint64, 8), release: make(chan struct{})}
	f, _ := newFolder(t, Config{Reload: newRunner(t, reload.Config{Actions: []reload.Action{a}, Attempts: 1})})
	applied := make(chan error, 1)
	go func() {
		for gen := uint64(1); gen <= 4; gen++ {
			if gen == 2 {
				<-a.started // the action hangs on generation 1
			}
			if err := f.Apply(t.Context(), update(gen, c.issue(t, devapi.SVIDOptions{}), c.Bundle())); err != nil {
				applied <- err
				return
			}
		}
		applied <- nil
	}()
	select {
	case err := <-applied:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(testkit.Timeout):
		close(a.release)
		<-applied
		t.Fatalf("four swaps still not done after %s: they wait for the hung reload action", testkit.Timeout)
	}
	if m, err := Inspect(f.InspectConfig(0)); err != nil || m.Generation != 4 {
		t.Errorf("with the action hung the folder holds %+v, %v; want generation 4", m, err)
	}
	st := f.Stats()
	if r := st.Actions[0]; !r.Running() || r.RunningGeneration != 1 || st.ReloadPending != 4 {
		t.Errorf("Stats while the action hangs = %+v, want it running for generation 1 and generation 4 pending", st)
	}

	close(a.release)
	waitActions(t, f)
	a.mu.Lock()
	defer a.mu.Unlock()
	if !slices.Equal(a.generations, []uint64{1, 4}) || a.most != 1 {
		t.Errorf("the action ran for generations %v, at most %d at once; want [1 4], one at a time", a.generations, a.most)
	}
	if st := f.Stats(); st.Actions[0].Running() || st.ReloadPending != 0 || st.Actions[0].Generation != 4 {
		t.Errorf("Stats after the action returned = %+v, want it done for generation 4, nothing pending", st)
	}
}
