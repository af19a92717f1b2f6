package admin

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
	"github.com/sds-bridge/sds-bridge/reload"
)

// The Kubernetes order: the bridge starts before PostgreSQL, so its first
// swap finds no postmaster.pid. That is no failure: /readyz is 200 and
// /status says "no server to reload" for the action. A reload that fails
// later against a server that is there (here: a re-run, as SIGHUP does)
// turns readiness red until one succeeds.
func TestNoServerToReloadKeepsTheBridgeReady(t *testing.T) {
	dir, aside := filepath.Join(t.TempDir(), "pg"), t.TempDir()
	pidFile, failFlag := filepath.Join(aside, "postmaster.pid"), filepath.Join(aside, "fail")
	signal := reload.SignalAction{PIDFile: pidFile}
	refusing := reload.ExecAction{Command: []string{"/bin/sh", "-c", `test ! -e "$0"`, failFlag}}
	runner := newRunner(t, reload.Config{Actions: []reload.Action{signal, refusing}, Attempts: 2, Backoff: time.Millisecond})
	b := startBridge(t, bridgeOptions{folders: []filesink.Config{{Dir: dir, Reload: runner}}})
	b.push(time.Hour)
	b.waitSinks(1, nil)
	testkit.Eventually(t, "both actions run", func() bool { return runner.Stats()[1].Generation == 1 })
	b.expectReadyz(http.StatusOK, "ready: generation 1")

	st := b.status()
	if !st.Ready || len(st.Folders) != 1 || len(st.Folders[0].Actions) != 2 {
		t.Fatalf("status = %+v, want ready with one folder and two actions", st)
	}
	a := st.Folders[0].Actions[0]
	if a.Action != signal.Name() || a.State != ActionNoServer || a.OK || a.Error != "" || a.Failures != 0 ||
		a.Generation != 1 || a.Attempts != 1 || !strings.Contains(a.NoServer, "no such file or directory") {
		t.Errorf("signal action status = %+v, want no server to reload for generation 1, no failure", a)
	}
	if a := st.Folders[0].Actions[1]; a.State != ActionOK || !a.OK {
		t.Errorf("exec action status = %+v, want ok", a)
	}
	var text strings.Builder
	if err := st.WriteText(&text, st.Time); err != nil {
		t.Fatal(err)
	}
	if want := signal.Name() + ": no server to reload for generation 1"; !strings.Contains(text.String(), want) || strings.Contains(text.String(), "FAILED") {
		t.Errorf("status text lacks %q or shows a failure:\n%s", want, text.String())
	}
	if got := metrics(t, b.url)[`sds_bridge_reload_action_failures_total{action="`+signal.Name()+`",folder="`+dir+`"}`]; got != 0 {
		t.Errorf("no server to reload counted as %v failures", got)
	}

	if err := os.WriteFile(failFlag, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := b.folders[0].RerunActions(t.Context()); !errors.Is(err, filesink.ErrReloadAction) {
		t.Fatalf("RerunActions() = %v, want the exec action's failure", err)
	}
	b.expectReadyz(http.StatusServiceUnavailable, "folder "+dir+": reload action exec:/bin/sh failed for generation 1")
	if err := os.Remove(failFlag); err != nil {
		t.Fatal(err)
	}
	if err := b.folders[0].RerunActions(t.Context()); err != nil {
		t.Fatalf("RerunActions() = %v", err)
	}
	b.expectReadyz(http.StatusOK)
}
