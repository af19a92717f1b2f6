package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// TestAPidFileNamingTheBridgeNeverMakesItSignalItself (issue 19, fault
// 4) runs the bridge binary with a signal action whose pid file holds the
// bridge's own pid: the action is refused, saying so, and an operator's
// SIGHUP re-runs it once, refused again, with no loop. Before, the
// bridge sent itself SIGHUP, whose handler re-ran the action: 168,053
// iterations and 107 MB of log in 10 s.
func TestAPidFileNamingTheBridgeNeverMakesItSignalItself(t *testing.T) {
	t.Parallel()
	bin := buildBridge(t)
	work := testkit.ShortDir(t)
	pidFile := filepath.Join(work, "postmaster.pid")
	cfg := filepath.Join(work, "bridge.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`
sds:
  socket: %s
files:
  - dir: %s
    on_rotate:
      - signal: {pid_file: %s}
admin:
  listen: ""
`, filepath.Join(work, "sds.sock"), filepath.Join(work, "certs"), pidFile)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "dev", "--config", cfg, "--svid-ttl", "1h")
	cmd.Dir = work // dev keeps its Workload API socket under ./sds-bridge-dev
	var stderr testkit.LogBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("bridge log (first 4 KiB):\n%.4096s", stderr.String())
		}
	})
	// Whether the first swap finds it or the late-server watch does, the
	// pid file names the bridge.
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "the refusal", func() bool { return strings.Contains(stderr.String(), "the bridge itself") })
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "the operator's re-run failing", func() bool {
		return strings.Contains(stderr.String(), "SIGHUP: reload actions failed")
	})
	if n := strings.Count(stderr.String(), "SIGHUP: re-applying"); n != 1 {
		t.Errorf("%d SIGHUPs handled, want 1 (the operator's): the bridge signalled itself", n)
	}
	select {
	case err := <-exited:
		exited <- err
		t.Fatalf("the bridge exited: %v", err)
	default:
	}
}
