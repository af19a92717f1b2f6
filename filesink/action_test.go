package filesink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sds-bridge/sds-bridge/folderstate"
	"github.com/sds-bridge/sds-bridge/internal/ca"
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

// The folder's runner runs after the swap is durable, with the swapped
// set's identity in its event; its failures mark Apply's error
// ErrReloadAction and leave the new generation in place; a failed write
// runs nothing.
func TestActionsRunAfterSwapWithRetries(t *testing.T) {
	c := newCA(t, "example.org")
	svid := c.issue(t, ca.SVIDOptions{})

	t.Run("in order, retried, with the event", func(t *testing.T) {
		var order []string
		first := &scriptedAction{name: "first", failures: 2, log: &order}
		second := &scriptedAction{name: "second", log: &order}
		logs := &syncBuffer{}
		lg := slog.New(slog.NewTextHandler(logs, nil))
		f, _ := newFolder(t, Config{Logger: lg, Reload: newRunner(t, reload.Config{Actions: []reload.Action{first, second}, Backoff: time.Millisecond, Logger: lg})})
		// The action sees the new generation on disk when it runs.
		first.onRun = func(int) {
			m, err := folderstate.Inspect(f.InspectConfig(0))
			if err != nil || m.Generation != 5 {
				order = append(order, fmt.Sprintf("not swapped yet: %v", err))
			}
		}
		if err := f.Apply(t.Context(), update(5, svid, c.Bundle())); err != nil {
			t.Fatal(err)
		}
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
		err := f.Apply(t.Context(), update(8, svid, c.Bundle()))
		if err == nil || !strings.Contains(err.Error(), "broken: failure 2") || !strings.Contains(err.Error(), "gave up after 2 attempts") {
			t.Fatalf("Apply() error = %v, want the last failure of broken", err)
		}
		if !errors.Is(err, ErrReloadAction) {
			t.Errorf("Apply() error = %v, want it marked ErrReloadAction", err)
		}
		if broken.calls != 2 || next.calls != 1 {
			t.Errorf("calls: broken %d, next %d; want 2 and 1", broken.calls, next.calls)
		}
		if m, err := folderstate.Inspect(f.InspectConfig(0)); err != nil || m.Generation != 8 {
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
		if a.calls != 0 {
			t.Errorf("action ran %d times after a failed write", a.calls)
		}
	})

}
