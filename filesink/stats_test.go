package filesink

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sds-bridge/sds-bridge/internal/devapi"
	"github.com/sds-bridge/sds-bridge/reload"
)

// A failed write is counted and cleared by the next good swap; action
// results name the generation they ran for.
func TestStats(t *testing.T) {
	c := newCA(t, "example.org")
	parent := t.TempDir()
	dir := filepath.Join(parent, "creds")
	ok := &scriptedAction{name: "ok"}
	f, _ := newFolder(t, Config{Dir: dir, Reload: newRunner(t, reload.Config{Actions: []reload.Action{ok}, Backoff: time.Millisecond})})
	if st := f.Stats(); st.WriteFailures != 0 || len(st.Actions) != 1 || st.Actions[0].Action != "ok" || st.Actions[0].Generation != 0 {
		t.Fatalf("fresh Stats() = %+v", st)
	}

	// A file where the folder should be: nothing can be written.
	if err := os.WriteFile(dir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := f.Apply(t.Context(), update(1, c.issue(t, devapi.SVIDOptions{}), c.Bundle())); err == nil {
		t.Fatal("Apply into a file succeeded")
	}
	st := f.Stats()
	if st.WriteFailures != 1 || st.LastWriteErr == nil || st.Actions[0].Generation != 0 {
		t.Fatalf("after a failed write Stats() = %+v, want 1 write failure and no action run", st)
	}

	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := f.Apply(t.Context(), update(2, c.issue(t, devapi.SVIDOptions{}), c.Bundle())); err != nil {
		t.Fatal(err)
	}
	waitActions(t, f)
	st = f.Stats()
	a := st.Actions[0]
	if st.WriteFailures != 1 || st.LastWriteErr != nil || a.Generation != 2 || a.Attempts != 1 || a.Err != nil || a.Failures != 0 || a.At.IsZero() {
		t.Errorf("after recovery Stats() = %+v, want the failure still counted, no last error, action ok for generation 2", st)
	}
}
