package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// TestSIGHUPReloadsAndTheBridgeKeepsRunning: an operator's SIGHUP no
// longer kills the daemon (it used to exit 129 with no log line and leave
// its socket behind). The bridge logs it, runs the folder's reload action
// again on the generation in place, keeps serving, and still stops
// cleanly on SIGTERM, removing its socket.
func TestSIGHUPReloadsAndTheBridgeKeepsRunning(t *testing.T) {
	t.Parallel() // a bridge process of its own: its own folders, sockets and signals
	bin := buildBridge(t)
	work := testkit.ShortDir(t)
	certs := filepath.Join(work, "certs")
	socket := filepath.Join(work, "sds.sock")
	actions := filepath.Join(work, "actions.log")
	cfg := filepath.Join(work, "bridge.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`
sds:
  socket: %s
files:
  - dir: %s
    on_rotate:
      - exec:
          command: ["/bin/sh", "-c", 'echo "$SDS_BRIDGE_GENERATION" >> %s']
admin:
  listen: ""
`, socket, certs, actions)), 0o644); err != nil {
		t.Fatal(err)
	}
	// An hour-long SVID: no rotation can stand in for the reload.
	cmd := exec.Command(bin, "dev", "--config", cfg, "--svid-ttl", "1h")
	cmd.Dir = work
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
			t.Logf("bridge log:\n%s", &stderr)
		}
	})
	runs := func() string { b, _ := os.ReadFile(actions); return string(b) }
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(signalTestTimeout)
		for !ok() {
			select {
			case err := <-exited:
				exited <- err // for the cleanup
				t.Fatalf("bridge exited (%v) while waiting for %s", err, what)
			case <-time.After(10 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %s within %s; actions ran: %q", what, signalTestTimeout, runs())
			}
		}
	}
	waitFor("first reload action", func() bool { return runs() == "1\n" })

	for i := 2; i <= 3; i++ {
		if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		want := strings.Repeat("1\n", i)
		waitFor(fmt.Sprintf("reload action run %d after SIGHUP", i), func() bool { return runs() == want })
	}
	if _, err := os.Lstat(socket); err != nil {
		t.Errorf("SDS socket gone while running: %v", err)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(signalTestTimeout):
		t.Fatal("still running after SIGTERM")
	}
	// Counted only now: stderr reaches the buffer through a pipe that
	// os/exec copies on its own goroutine, so a line the bridge wrote
	// before an action ran may arrive after the action's file write is
	// seen; once Wait has returned, all of it is there.
	if n := strings.Count(stderr.String(), "SIGHUP: re-applying"); n != 2 {
		t.Errorf("%d SIGHUP log lines, want 2", n)
	}
	if _, err := os.Lstat(socket); err == nil {
		t.Error("SDS socket left behind after SIGTERM")
	}
}
