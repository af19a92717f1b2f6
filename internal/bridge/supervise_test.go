package bridge

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/internal/config"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
	"github.com/sds-bridge/sds-bridge/rotation"
	"github.com/sds-bridge/sds-bridge/supervise"
)

// gateChildArg makes this test binary the supervised program of the start
// gate's tests (runGateChild): a Go program, as dash can lose a trapped
// signal while it forks.
const gateChildArg = "bridge-test-gate-child"

// runGateChild logs "start", each HUP, and "TERM", on which it exits 0.
func runGateChild(log string) {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM)
	record := func(line string) {
		f, err := os.OpenFile(log, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			syscall.Exit(1)
		}
		fmt.Fprintln(f, line)
		f.Close()
	}
	record("start")
	for sig := range sigs {
		if sig == syscall.SIGTERM {
			record("TERM")
			syscall.Exit(0) // not os.Exit: under -race it waits a second first

		}
		record("HUP")
	}
}

// waitForLog polls until log holds exactly want, one word a line.
func waitForLog(t *testing.T, log string, want ...string) {
	t.Helper()
	testkit.Eventually(t, fmt.Sprintf("the program's log to be %q", want), func() bool {
		b, _ := os.ReadFile(log)
		return strings.Join(strings.Fields(string(b)), " ") == strings.Join(want, " ")
	})
}

// The swap that completes the set (each sink's first generation, here the
// folder's after SDS's) starts the program and is never reported to it as
// a swap, however the start and that report interleave; nor is a repeated
// report of a generation. The next folder swap signals it once. Repeated
// starts, since the wrong order was a race (fault 8 of issue 19: sleep
// killed by SIGHUP one start in six).
func TestTheFirstCompleteSetNeverSignalsTheProgram(t *testing.T) {
	for i := range 30 {
		log := filepath.Join(t.TempDir(), "log")
		sup, err := supervise.New(supervise.Config{
			Command:     []string{os.Args[0], gateChildArg, log},
			RenewSignal: syscall.SIGHUP,
			StartGrace:  time.Nanosecond, // nothing to hide a wrong signal behind
			Logger:      testkit.Logger(t),
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- sup.Run(ctx) }()
		g := &startGate{sup: sup, sinks: 2, folders: map[string]bool{"folder": true}, applied: map[string]uint64{}}
		g.observe(rotation.SinkStatus{Name: "sds", Generation: 1})
		g.observe(rotation.SinkStatus{Name: "folder", Generation: 1})
		waitForLog(t, log, "start")
		g.observe(rotation.SinkStatus{Name: "folder", Generation: 1})
		g.observe(rotation.SinkStatus{Name: "sds", Generation: 2})
		g.observe(rotation.SinkStatus{Name: "folder", Generation: 2})
		waitForLog(t, log, "start", "HUP")
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("start %d: Run = %v", i, err)
		}
		waitForLog(t, log, "start", "HUP", "TERM")
	}
}

// A supervised program that fails while the bridge runs as root and a
// folder's key is root's alone (no files[].owner) is told why it likely
// failed, naming the key, its mode and the key to set; it exits with the
// program's status still. As another uid, with an owner, or a clean exit,
// the error is left alone.
func TestAFailedProgramIsToldTheKeyIsRootsAlone(t *testing.T) {
	exit := &supervise.ExitError{Program: "/usr/sbin/mosquitto", Code: 1}
	cfg := &config.Config{Files: []config.Folder{{Config: filesink.Config{Dir: "/certs", KeyFileName: "svid.key", KeyMode: 0o600}}}}
	err := ownerHint(cfg, 0, exit)
	for _, want := range []string{"/certs/svid.key", "uid 0 owns it, mode 0600", "files[0].owner", "--owner"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q lacks %q", err, want)
		}
	}
	var code interface{ ExitCode() int }
	if !errors.As(err, &code) || code.ExitCode() != 1 {
		t.Errorf("the hint lost the program's status: %v", err)
	}
	owned := &config.Config{Files: []config.Folder{{Config: filesink.Config{Dir: "/certs", KeyFileName: "svid.key", KeyMode: 0o600, Owner: &filesink.Owner{UID: 103, GID: 106}}}}}
	for name, got := range map[string]error{
		"not root":   ownerHint(cfg, 1000, exit),
		"owner set":  ownerHint(owned, 0, exit),
		"clean exit": ownerHint(cfg, 0, &supervise.ExitError{Code: 0}),
	} {
		if got != error(exit) && name != "clean exit" {
			t.Errorf("%s: %v, want the program's error alone", name, got)
		}
		if name == "clean exit" && strings.Contains(got.Error(), "owner") {
			t.Errorf("%s: %v", name, got)
		}
	}
}
