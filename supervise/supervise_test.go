package supervise

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

	"go.uber.org/goleak"

	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

func TestMain(m *testing.M) {
	if len(os.Args) == 3 && os.Args[1] == childArg {
		runChild(os.Args[2])
		return
	}
	goleak.VerifyTestMain(m)
}

// childArg makes this test binary the supervised child (runChild).
const childArg = "supervise-test-child"

// childCommand runs this test binary as the child, logging to log. A Go
// child rather than a shell script: dash can lose a trapped signal that
// arrives while it forks its next command, and a test of "each swap
// signals the child" must not depend on that.
func childCommand(log string) []string { return []string{os.Args[0], childArg, log} }

// runChild logs "start", then each signal: HUP (and goes on), INT (exits
// 3), TERM (exits 0).
func runChild(log string) {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)
	record := func(line string) {
		f, err := os.OpenFile(log, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			os.Exit(1)
		}
		fmt.Fprintln(f, line)
		f.Close()
	}
	record("start")
	for sig := range sigs {
		switch sig {
		case syscall.SIGHUP:
			record("HUP")
		case syscall.SIGINT:
			record("INT")
			os.Exit(3)
		case syscall.SIGTERM:
			record("TERM")
			os.Exit(0)
		}
	}
}

func shCommand(script, log string) []string { return []string{"/bin/sh", "-c", script, "sh", log} }

// lines reads log as lines ("" → none).
func lines(log string) []string {
	b, _ := os.ReadFile(log)
	return strings.Fields(string(b))
}

// waitFor polls until log holds want lines (as a prefix match of the
// whole), or fails after testkit.Timeout.
func waitFor(t *testing.T, log string, want ...string) {
	t.Helper()
	deadline := time.Now().Add(testkit.Timeout)
	for {
		got := lines(log)
		if strings.Join(got, " ") == strings.Join(want, " ") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("log = %q, want %q", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type running struct {
	sup  *Supervisor
	sigs chan os.Signal
	done chan error
	stop context.CancelFunc
}

func start(t *testing.T, cfg Config) *running {
	t.Helper()
	sigs := make(chan os.Signal, 1)
	cfg.Signals = sigs
	cfg.Logger = testkit.Logger(t)
	cfg.StartGrace = cmpOr(cfg.StartGrace, 10*time.Millisecond)
	cfg.MinBackoff = cmpOr(cfg.MinBackoff, 10*time.Millisecond)
	sup, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{sup: sup, sigs: sigs, done: make(chan error, 1), stop: cancel}
	go func() { r.done <- sup.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

func cmpOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

func (r *running) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err
	case <-time.After(testkit.Timeout):
		t.Fatal("Run did not return")
		return nil
	}
}

// The child is not started before the first Offer: a program that would
// read the folder must not run while it may still hold a previous pod's
// files.
func TestTheChildStartsOnlyOnceOffered(t *testing.T) {
	log := filepath.Join(t.TempDir(), "log")
	r := start(t, Config{Command: childCommand(log), RenewSignal: syscall.SIGHUP})
	time.Sleep(300 * time.Millisecond)
	if got := lines(log); len(got) != 0 {
		t.Fatalf("the child ran before a set was offered: %q", got)
	}
	r.sup.Offer(1)
	waitFor(t, log, "start")
}

// Each larger set offered after the start sends RenewSignal; sets offered
// before the start do not (the child reads those files when it starts).
func TestEachSwapSignalsTheChild(t *testing.T) {
	log := filepath.Join(t.TempDir(), "log")
	r := start(t, Config{Command: childCommand(log), RenewSignal: syscall.SIGHUP})
	r.sup.Offer(2)
	waitFor(t, log, "start")
	for i := range 3 {
		r.sup.Offer(uint64(3 + i))
		want := []string{"start"}
		for range i + 1 {
			want = append(want, "HUP")
		}
		waitFor(t, log, want...)
	}
}

// A report of the set the child started with, or an older one, arriving
// after the child started (the report of the swap that completed the set
// races with the start), never signals it: it read those files at its
// start, and a program that has not yet installed its handler dies of
// SIGHUP. Only a larger set does, once.
func TestTheChildIsNeverSignalledForTheSetItStartedWith(t *testing.T) {
	log := filepath.Join(t.TempDir(), "log")
	// No start grace to hide a wrong signal behind.
	r := start(t, Config{Command: childCommand(log), RenewSignal: syscall.SIGHUP, StartGrace: time.Nanosecond})
	r.sup.Offer(3)
	waitFor(t, log, "start")
	r.sup.Offer(3)
	r.sup.Offer(2)
	r.sup.Offer(4)
	waitFor(t, log, "start", "HUP")
	r.stop()
	if err := r.wait(t); err != nil {
		t.Fatalf("Run = %v, want nil (the child exited 0 on TERM)", err)
	}
	waitFor(t, log, "start", "HUP", "TERM")
}

// A signal the bridge caught is forwarded as is, and Run returns the
// child's exit status (3 after INT here).
func TestCaughtSignalsAreForwardedAndTheExitStatusReturned(t *testing.T) {
	log := filepath.Join(t.TempDir(), "log")
	r := start(t, Config{Command: childCommand(log)})
	r.sup.Offer(1)
	waitFor(t, log, "start")
	r.sigs <- syscall.SIGINT
	err := r.wait(t)
	var ee *ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("Run = %v, want an exit with status 3", err)
	}
	waitFor(t, log, "start", "INT")
}

// When the bridge stops without a caught signal, the child gets SIGTERM
// and Run returns once it has exited (status 0: nil).
func TestStoppingSendsSIGTERMAndWaitsForTheChild(t *testing.T) {
	log := filepath.Join(t.TempDir(), "log")
	r := start(t, Config{Command: childCommand(log)})
	r.sup.Offer(1)
	waitFor(t, log, "start")
	r.stop()
	if err := r.wait(t); err != nil {
		t.Fatalf("Run = %v, want nil (the child exited 0 on TERM)", err)
	}
	waitFor(t, log, "start", "TERM")
}

// A child that ignores the stop is killed after StopTimeout, and the
// status says so (128 + 9).
func TestAChildThatIgnoresTheStopIsKilled(t *testing.T) {
	log := filepath.Join(t.TempDir(), "log")
	r := start(t, Config{
		Command:     shCommand(`trap '' TERM; echo start >> "$1"; while :; do sleep 0.05; done`, log),
		StopTimeout: 200 * time.Millisecond,
	})
	r.sup.Offer(1)
	waitFor(t, log, "start")
	r.stop()
	err := r.wait(t)
	var ee *ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 137 || ee.Signal != syscall.SIGKILL {
		t.Fatalf("Run = %v, want killed by SIGKILL, status 137", err)
	}
}

// With the default restart policy (never) a child that exits on its own
// ends Run with its status, and is not started again.
func TestAChildThatExitsEndsRunWithItsStatus(t *testing.T) {
	log := filepath.Join(t.TempDir(), "log")
	r := start(t, Config{Command: shCommand(`echo start >> "$1"; exit 7`, log)})
	r.sup.Offer(1)
	err := r.wait(t)
	var ee *ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 7 || ee.Signal != 0 {
		t.Fatalf("Run = %v, want an exit with status 7", err)
	}
	time.Sleep(100 * time.Millisecond)
	if got := lines(log); len(got) != 1 {
		t.Fatalf("started %d times, want once: %q", len(got), got)
	}
}

// restart: on-failure starts a failed child again (with backoff) and ends
// when it exits 0.
func TestOnFailureRestartsUntilTheChildSucceeds(t *testing.T) {
	log := filepath.Join(t.TempDir(), "log")
	// Fails on its first two runs, succeeds on the third.
	script := `echo start >> "$1"; [ "$(wc -l < "$1")" -ge 3 ]`
	r := start(t, Config{Command: shCommand(script, log), Restart: RestartOnFailure})
	r.sup.Offer(1)
	if err := r.wait(t); err != nil {
		t.Fatalf("Run = %v, want nil after the third start", err)
	}
	waitFor(t, log, "start", "start", "start")
}

// New refuses what cannot run.
func TestNewRefusesABadConfig(t *testing.T) {
	for _, cfg := range []Config{{}, {Command: []string{""}}, {Command: []string{"x"}, Restart: "always"}} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) = nil error", cfg)
		}
	}
}
