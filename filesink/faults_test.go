package filesink

import (
	"context"
	"errors"
	"io/fs"
	"path"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/sds-bridge/sds-bridge/internal/devapi"
	"github.com/sds-bridge/sds-bridge/reload"
)

// countingAction counts its runs.
type countingAction struct{ runs atomic.Int64 }

func (a *countingAction) Name() string { return "counting" }

func (a *countingAction) Run(context.Context, reload.Event) error {
	a.runs.Add(1)
	return nil
}

// TestDiskFaults makes the filesystem fail under a swap, as a full or
// read-only disk does: the swap is refused whole, the consumers keep the
// previous set, no half generation is left, no reload action runs, the
// failure is counted, and the next swap after the fault works.
func TestDiskFaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		fault func(op, name string) error
		errno syscall.Errno
	}{
		{
			name: "read-only: generation directory cannot be created",
			fault: func(op, name string) error {
				if op == "mkdir" {
					return &fs.PathError{Op: "mkdir", Path: name, Err: syscall.EROFS}
				}
				return nil
			},
			errno: syscall.EROFS,
		},
		{
			name: "full: the key file cannot be created",
			fault: func(op, name string) error {
				if op == "create" && path.Base(name) == DefaultKeyFileName {
					return &fs.PathError{Op: "open", Path: name, Err: syscall.ENOSPC}
				}
				return nil
			},
			errno: syscall.ENOSPC,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newCA(t, "example.org")
			action := &countingAction{}
			f, _ := newFolder(t, Config{Reload: newRunner(t, reload.Config{Actions: []reload.Action{action}})})
			if err := f.Prepare(t.Context()); err != nil {
				t.Fatal(err)
			}
			if err := f.Apply(t.Context(), update(1, c.issue(t, devapi.SVIDOptions{}), c.Bundle())); err != nil {
				t.Fatal(err)
			}
			waitActions(t, f)
			before, err := Inspect(InspectConfig{Dir: f.Dir()})
			if err != nil {
				t.Fatal(err)
			}
			entriesBefore := listDir(t, f.Dir())

			f.hooks = &hooks{fault: tt.fault}
			err = f.Apply(t.Context(), update(2, c.issue(t, devapi.SVIDOptions{}), c.Bundle()))
			if !errors.Is(err, tt.errno) {
				t.Fatalf("Apply = %v, want %v", err, tt.errno)
			}
			waitActions(t, f)
			after, err := Inspect(InspectConfig{Dir: f.Dir()})
			if err != nil || after.Serial != before.Serial || after.Generation != 1 {
				t.Fatalf("after the fault: %+v, %v; want generation 1 (serial %s) kept", after, err, before.Serial)
			}
			if got := listDir(t, f.Dir()); strings.Join(got, " ") != strings.Join(entriesBefore, " ") {
				t.Errorf("folder after the fault holds %v, want %v (no half generation)", got, entriesBefore)
			}
			if n := action.runs.Load(); n != 1 {
				t.Errorf("reload action ran %d times, want once (for generation 1 only)", n)
			}
			if st := f.Stats(); st.WriteFailures != 1 || !errors.Is(st.LastWriteErr, tt.errno) {
				t.Errorf("Stats = %+v, want one write failure", st)
			}

			f.hooks = nil
			if err := f.Apply(t.Context(), update(3, c.issue(t, devapi.SVIDOptions{}), c.Bundle())); err != nil {
				t.Fatalf("Apply after the fault: %v", err)
			}
			waitActions(t, f)
			if m, err := Inspect(InspectConfig{Dir: f.Dir()}); err != nil || m.Generation != 3 {
				t.Errorf("after recovery: %+v, %v; want generation 3", m, err)
			}
			if st := f.Stats(); st.LastWriteErr != nil || action.runs.Load() != 2 {
				t.Errorf("after recovery: Stats %+v, %d action runs", st, action.runs.Load())
			}
		})
	}
}
