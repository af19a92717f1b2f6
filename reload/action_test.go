package reload

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// sighupWaiter is a child process that waits for SIGHUP.
type sighupWaiter struct {
	cmd      *exec.Cmd
	pid      int
	gotFile  string
	waitErr  chan error
	finished bool
}

func startSighupWaiter(t *testing.T) *sighupWaiter {
	t.Helper()
	dir := t.TempDir()
	ready, got := filepath.Join(dir, "ready"), filepath.Join(dir, "got")
	cmd := exec.Command(os.Args[0], helperArg, "wait-sighup", ready, got)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w := &sighupWaiter{cmd: cmd, pid: cmd.Process.Pid, gotFile: got, waitErr: make(chan error, 1)}
	go func() { w.waitErr <- cmd.Wait() }()
	t.Cleanup(func() {
		if !w.finished {
			_ = cmd.Process.Kill()
			<-w.waitErr
		}
	})
	// The helper writes ready only after installing its SIGHUP handler.
	for deadline := time.Now().Add(20 * time.Second); ; {
		if _, err := os.Stat(ready); err == nil {
			return w
		}
		if time.Now().After(deadline) {
			t.Fatal("helper process never became ready")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// wait returns once the helper has exited and reports whether it got SIGHUP.
func (w *sighupWaiter) wait(t *testing.T) bool {
	t.Helper()
	err := <-w.waitErr
	w.finished = true
	if err != nil {
		t.Errorf("helper %d exited with %v", w.pid, err)
		return false
	}
	got, err := os.ReadFile(w.gotFile)
	return err == nil && string(got) == syscall.SIGHUP.String()
}

func writePIDFile(t *testing.T, path string, pid int) {
	t.Helper()
	// postmaster.pid: the pid, then data directory, start time, port…
	content := fmt.Sprintf("%d\n/var/lib/postgresql/data\n1700000000\n5432\n", pid)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestSignalAction(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "postmaster.pid")
	action := SignalAction{PIDFile: pidFile}
	r, _ := newRunner(t, Config{Actions: []Action{action}})

	// The pid file is read at every run: a restarted process has a new pid.
	for gen := uint64(1); gen <= 2; gen++ {
		w := startSighupWaiter(t)
		writePIDFile(t, pidFile, w.pid)
		if err := r.Run(t.Context(), Event{Generation: gen}); err != nil {
			t.Fatal(err)
		}
		if !w.wait(t) {
			t.Fatalf("generation %d: process %d did not get SIGHUP", gen, w.pid)
		}
	}
	if got := action.Name(); got != "signal:"+pidFile {
		t.Errorf("Name() = %q", got)
	}
}

func TestSignalActionErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		content *string
		wantErr string
	}{
		{"missing pid file", nil, "no such file"},
		{"empty", ptr(""), `first line "" is not a process id`},
		{"not a number", ptr("postgres\n"), `first line "postgres"`},
		{"zero would signal our process group", ptr("0\n"), `first line "0"`},
		{"negative would signal a process group", ptr("-1\n"), `first line "-1"`},
		{"no such process", ptr(strconv.Itoa(1<<22+12345) + "\n"), "no such process"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strconv.Itoa(i)+".pid")
			if tt.content != nil {
				if err := os.WriteFile(path, []byte(*tt.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			err := SignalAction{PIDFile: path}.Run(t.Context(), Event{})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Run() error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestExecAction(t *testing.T) {
	notAfter := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	ev := Event{Dir: "/run/creds", Generation: 17, SPIFFEID: "spiffe://example.org/db", NotAfter: notAfter}

	t.Run("environment", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "env")
		a := ExecAction{Command: []string{os.Args[0], helperArg, "dump-env", out}}
		if err := a.Run(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
		want := "SDS_BRIDGE_EVENT=x509\nSDS_BRIDGE_DIR=/run/creds\nSDS_BRIDGE_GENERATION=17\nSDS_BRIDGE_SPIFFE_ID=spiffe://example.org/db\nSDS_BRIDGE_NOT_AFTER=2030-01-02T03:04:05Z\n"
		if got := string(readFile(t, out)); got != want {
			t.Errorf("environment:\n%s\nwant:\n%s", got, want)
		}
	})

	// An action that runs on both events can tell a JWT refresh from a
	// new X.509 set.
	t.Run("jwt event", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "env")
		a := ExecAction{Command: []string{os.Args[0], helperArg, "dump-env", out}}
		if err := a.Run(t.Context(), Event{Kind: EventJWT, Dir: "/run/creds", SPIFFEID: "spiffe://example.org/db", NotAfter: notAfter}); err != nil {
			t.Fatal(err)
		}
		want := "SDS_BRIDGE_EVENT=jwt\nSDS_BRIDGE_DIR=/run/creds\nSDS_BRIDGE_GENERATION=0\nSDS_BRIDGE_SPIFFE_ID=spiffe://example.org/db\nSDS_BRIDGE_NOT_AFTER=2030-01-02T03:04:05Z\n"
		if got := string(readFile(t, out)); got != want {
			t.Errorf("environment:\n%s\nwant:\n%s", got, want)
		}
	})

	t.Run("no shell", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "a;b")
		a := ExecAction{Command: []string{os.Args[0], helperArg, "dump-env", out}}
		if err := a.Run(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(out); err != nil {
			t.Errorf("argument with a shell metacharacter was not passed verbatim: %v", err)
		}
	})

	t.Run("exit status and stderr tail", func(t *testing.T) {
		long := strings.Repeat("x", 3000)
		a := ExecAction{Command: []string{os.Args[0], helperArg, "fail", "3", long, "pg_ctl: server is not running"}}
		err := a.Run(t.Context(), ev)
		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) || exitErr.ExitCode() != 3 {
			t.Fatalf("Run() error = %v, want exit status 3", err)
		}
		msg := err.Error()
		if !strings.Contains(msg, "exit status 3") || !strings.Contains(msg, "pg_ctl: server is not running") ||
			len(msg) > 1500 || strings.Contains(msg, "\n") {
			t.Errorf("error message %q: want the status and a one-line stderr tail", msg)
		}
	})

	t.Run("killed at timeout", func(t *testing.T) {
		a := ExecAction{Command: []string{os.Args[0], helperArg, "sleep"}, Timeout: 100 * time.Millisecond}
		err := a.Run(t.Context(), ev)
		if err == nil || !strings.Contains(err.Error(), "killed after timeout 100ms") {
			t.Fatalf("Run() error = %v, want a timeout kill", err)
		}
	})

	t.Run("missing program", func(t *testing.T) {
		err := ExecAction{Command: []string{"/nonexistent/reload"}}.Run(t.Context(), ev)
		if err == nil || !strings.Contains(err.Error(), "/nonexistent/reload") {
			t.Fatalf("Run() error = %v", err)
		}
	})
}

// Actions run in order, each with its retries; a retry loop ends with its
// context.
func TestRunRetriesUntilCtxEnds(t *testing.T) {
	t.Run("retries stop when ctx ends", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		stuck := &scriptedAction{name: "stuck", failures: 1 << 30, onRun: func(call int) {
			if call == 3 {
				cancel()
			}
		}}
		never := &scriptedAction{name: "never"}
		r, _ := newRunner(t, Config{Actions: []Action{stuck, never}, Attempts: 1000, Backoff: time.Millisecond})
		err := r.Run(ctx, Event{Generation: 9})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run() error = %v, want context.Canceled", err)
		}
		if stuck.calls != 3 || never.calls != 0 {
			t.Errorf("calls: stuck %d, never %d; want 3 and 0", stuck.calls, never.calls)
		}
	})

	t.Run("exec action bounded by its timeout", func(t *testing.T) {
		r, _ := newRunner(t, Config{
			Actions:  []Action{ExecAction{Command: []string{os.Args[0], helperArg, "sleep"}, Timeout: 50 * time.Millisecond}},
			Attempts: 2, Backoff: time.Millisecond,
		})
		err := r.Run(t.Context(), Event{Generation: 1})
		if err == nil || !strings.Contains(err.Error(), "killed after timeout") {
			t.Fatalf("Run() error = %v, want the timeout", err)
		}
	})
}

// deadPID is the pid of a child process that has exited and been reaped.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], helperArg, "fail", "0")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

// A signal action whose server is not running (no pid file yet, or a pid
// file left by a process that is gone) has no server to reload: not a
// failure. It is tried once, not counted, Run succeeds and Stats says
// so. A pid file that cannot be understood is still a failure.
func TestSignalActionWithoutServerIsNoServerToReload(t *testing.T) {
	for _, tc := range []struct {
		name    string
		content func(t *testing.T) *string
		want    string
	}{
		{"no pid file", func(*testing.T) *string { return nil }, "no such file or directory"},
		{"pid file of a process that is gone", func(t *testing.T) *string {
			return ptr(fmt.Sprintf("%d\n/var/lib/postgresql/data\n", deadPID(t)))
		}, "no such process"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pidFile := filepath.Join(t.TempDir(), "postmaster.pid")
			if content := tc.content(t); content != nil {
				if err := os.WriteFile(pidFile, []byte(*content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			a := SignalAction{PIDFile: pidFile}
			err := a.Run(t.Context(), Event{})
			if !errors.Is(err, ErrNoServer) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run() = %v, want ErrNoServer and %q", err, tc.want)
			}

			r, logs := newRunner(t, Config{Actions: []Action{a}, Attempts: 3, Backoff: time.Millisecond})
			if err := r.Run(t.Context(), Event{Generation: 1}); err != nil {
				t.Fatalf("Run() = %v, want no error: there is no server to reload", err)
			}
			st := r.Stats()[0]
			if !st.NoServer() || st.Failed() || st.Attempts != 1 || st.Failures != 0 || st.Generation != 1 {
				t.Errorf("action stats = %+v, want no server for generation 1 after 1 attempt, no failure", st)
			}
			if strings.Contains(logs.String(), "reload action failed") || strings.Count(logs.String(), "it reads the files in place when it starts") != 1 {
				t.Errorf("logs:\n%s\nwant one no-server line and no failure", logs.String())
			}
		})
	}

	t.Run("a pid file that is not one is a failure", func(t *testing.T) {
		pidFile := filepath.Join(t.TempDir(), "postmaster.pid")
		if err := os.WriteFile(pidFile, []byte("postgres\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		r, _ := newRunner(t, Config{Actions: []Action{SignalAction{PIDFile: pidFile}}, Attempts: 2, Backoff: time.Millisecond})
		err := r.Run(t.Context(), Event{Generation: 1})
		if err == nil || errors.Is(err, ErrNoServer) {
			t.Fatalf("Run() = %v, want a reload failure", err)
		}
		if st := r.Stats()[0]; !st.Failed() || st.Failures != 2 {
			t.Errorf("action stats = %+v, want failed twice", st)
		}
	})
}

// got reports whether the helper has recorded a SIGHUP, without waiting.
func (w *sighupWaiter) got() bool {
	got, err := os.ReadFile(w.gotFile)
	return err == nil && string(got) == syscall.SIGHUP.String()
}

// A server that starts after the swap (the Kubernetes order: the bridge is
// a sidecar that starts first) is reloaded once when its pid file appears:
// it may have read the files just before the swap. Then the folder stops
// watching: a later process gets nothing until the next generation.
func TestServerStartedAfterTheSwapIsReloadedOnce(t *testing.T) {
	const poll = 10 * time.Millisecond
	pidFile := filepath.Join(t.TempDir(), "postmaster.pid")
	r, logs := newRunner(t, Config{Actions: []Action{SignalAction{PIDFile: pidFile}}, NoServerPoll: poll, Backoff: time.Millisecond})
	if err := r.Run(t.Context(), Event{Generation: 1}); err != nil {
		t.Fatalf("Run() before the server exists = %v, want no error", err)
	}

	w := startSighupWaiter(t)
	writePIDFile(t, pidFile, w.pid)
	if !w.wait(t) {
		t.Fatalf("process %d, started after the swap, did not get SIGHUP", w.pid)
	}
	testkit.Eventually(t, "the late reload recorded", func() bool {
		st := r.Stats()[0]
		return st.Generation == 1 && st.Err == nil && st.Attempts == 1
	})
	if n := strings.Count(logs.String(), "server appeared after the swap"); n != 1 {
		t.Errorf("%d late reloads logged, want 1:\n%s", n, logs.String())
	}

	later := startSighupWaiter(t)
	writePIDFile(t, pidFile, later.pid)
	time.Sleep(20 * poll)
	if later.got() {
		t.Errorf("a process started after the late reload got SIGHUP too: the folder kept watching")
	}
}

// The watch for a late server ends with the context of the Run that
// started it, and sends nothing after that.
func TestWatchForLateServerEndsWithItsContext(t *testing.T) {
	const poll = 10 * time.Millisecond
	pidFile := filepath.Join(t.TempDir(), "postmaster.pid")
	r, _ := newRunner(t, Config{Actions: []Action{SignalAction{PIDFile: pidFile}}, NoServerPoll: poll})
	ctx, cancel := context.WithCancel(t.Context())
	if err := r.Run(ctx, Event{Generation: 1}); err != nil {
		t.Fatal(err)
	}
	cancel()
	w := startSighupWaiter(t)
	writePIDFile(t, pidFile, w.pid)
	time.Sleep(20 * poll)
	if w.got() {
		t.Errorf("SIGHUP sent after the Run's context ended")
	}
	if st := r.Stats()[0]; !st.NoServer() {
		t.Errorf("action stats = %+v, want still no server", st)
	}
}

// Rerun (what SIGHUP does) runs every action again for the
// generation in place, with the rules of a swap: no server is no failure,
// a failure is retried and returned. Before the first swap it does nothing.
func TestRerun(t *testing.T) {
	dir := t.TempDir()
	pidFile, failFlag := filepath.Join(dir, "postmaster.pid"), filepath.Join(dir, "fail")
	recorder := &scriptedAction{name: "recorder"}
	refusing := ExecAction{Command: []string{"/bin/sh", "-c", `test ! -e "$0"`, failFlag}}
	r, _ := newRunner(t, Config{
		Actions:  []Action{recorder, SignalAction{PIDFile: pidFile}, refusing},
		Attempts: 2, Backoff: time.Millisecond,
	})

	if err := r.Rerun(t.Context()); err != nil || recorder.calls != 0 {
		t.Fatalf("before the first swap: RerunActions() = %v with %d runs, want nothing done", err, recorder.calls)
	}

	first := startSighupWaiter(t)
	writePIDFile(t, pidFile, first.pid)
	if err := r.Run(t.Context(), Event{Generation: 4}); err != nil {
		t.Fatal(err)
	}
	if !first.wait(t) {
		t.Fatal("the swap did not signal the server")
	}

	second := startSighupWaiter(t)
	writePIDFile(t, pidFile, second.pid)
	if err := r.Rerun(t.Context()); err != nil {
		t.Fatalf("RerunActions() = %v", err)
	}
	if !second.wait(t) {
		t.Error("RerunActions did not signal the server")
	}
	if recorder.calls != 2 || recorder.events[1] != recorder.events[0] || recorder.events[1].Generation != 4 {
		t.Errorf("recorder events = %+v, want generation 4 twice", recorder.events)
	}

	if err := os.Remove(pidFile); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(failFlag, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	err := r.Rerun(t.Context())
	if err == nil || errors.Is(err, ErrNoServer) || !strings.Contains(err.Error(), "gave up after 2 attempts") {
		t.Fatalf("RerunActions() = %v, want the exec failure only", err)
	}
	st := r.Stats()
	if !st[1].NoServer() || st[1].Failures != 0 || !st[2].Failed() || st[2].Generation != 4 {
		t.Errorf("action stats = %+v, want the signal action without server and the exec action failed", st)
	}
}

// TestACommandThatLeavesADaemonSucceedsAndTheDaemonIsLeftAlone (issue
// 19, fault 9): a reload command that starts a daemon holding its stderr
// (setsid, so out of the command's process group) and exits 0 has
// succeeded, at the first attempt; the daemon still runs. Before, each run
// ended "WaitDelay expired before I/O complete", was retried three times
// (three daemons) and kept /readyz red. The exit status still decides: the
// same command exiting 1 fails.
func TestACommandThatLeavesADaemonSucceedsAndTheDaemonIsLeftAlone(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		exit   int
		failed bool
	}{{0, false}, {1, true}} {
		pidFile := filepath.Join(t.TempDir(), "daemon.pid")
		daemon := ExecAction{Command: []string{"/bin/sh", "-c", `setsid sleep 300 & echo $! > "$0"; exit ` + strconv.Itoa(tt.exit), pidFile}}
		r, _ := newRunner(t, Config{Actions: []Action{daemon}, Backoff: time.Millisecond})
		err := r.Run(t.Context(), Event{Generation: 1})
		pids := daemonPIDs(t, pidFile)
		if (err != nil) != tt.failed {
			t.Errorf("exit %d: Run() = %v, want failed %v", tt.exit, err, tt.failed)
		}
		if err != nil && strings.Contains(err.Error(), "WaitDelay") {
			t.Errorf("exit %d: the failure is the daemon's open stderr, not the exit status: %v", tt.exit, err)
		}
		if a := r.Stats()[0]; !tt.failed && (a.Attempts != 1 || a.Failed()) {
			t.Errorf("exit %d: stats %+v, want done at the first attempt", tt.exit, a)
		}
		if !tt.failed && len(pids) != 1 {
			t.Errorf("exit 0: %d daemons started, want 1 (no retry)", len(pids))
		}
		for _, pid := range pids {
			if err := syscall.Kill(pid, 0); err != nil {
				t.Errorf("exit %d: the daemon (pid %d), out of the command's process group, was killed: %v", tt.exit, pid, err)
			}
		}
	}
}

// daemonPIDs reads the pids the daemon command wrote and kills them when
// the test ends.
func daemonPIDs(t *testing.T, pidFile string) []int {
	t.Helper()
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
		t.Cleanup(func() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			// Reap it if it is ours (a setsid child reparents to init).
			var ws syscall.WaitStatus
			_, _ = syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		})
	}
	return pids
}

// TestASignalActionRefusesToSignalTheBridgeItself (issue 19, fault 4): a
// pid file naming the bridge's own pid (as pid 1 does when the bridge is
// a container's entrypoint) is refused with an error saying so, and no
// signal is sent. Before, the bridge sent itself SIGHUP, whose handler
// re-ran the action: 168,053 iterations in 10 s.
func TestASignalActionRefusesToSignalTheBridgeItself(t *testing.T) {
	// The old code's SIGHUP to this process must not kill the test binary.
	hups := make(chan os.Signal, 1)
	signal.Notify(hups, syscall.SIGHUP)
	defer signal.Stop(hups)
	pidFile := filepath.Join(t.TempDir(), "postmaster.pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := SignalAction{PIDFile: pidFile}.Run(t.Context(), Event{Generation: 1})
	if err == nil || !strings.Contains(err.Error(), "the bridge itself") || errors.Is(err, ErrNoServer) {
		t.Fatalf("Run() = %v, want a refusal naming the bridge itself (a failure, not no server)", err)
	}
	select {
	case <-hups:
		t.Error("the action signalled the bridge itself")
	default:
	}
}

// A FIFO planted at the pid file's path is refused at once, not read:
// opening it for reading would wait for a writer, holding back the
// folder's reloads. A pid file of any size is read only up to its first
// line.
func TestSignalActionReadsOnlyTheFirstLineOfARegularPIDFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.pid")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	err := SignalAction{PIDFile: fifo}.Run(t.Context(), Event{})
	if err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("Run() with a FIFO = %v, want not a regular file", err)
	}

	big := filepath.Join(dir, "big.pid")
	content := "postgres\n" + strings.Repeat("x", 1<<21)
	if err := os.WriteFile(big, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	err = SignalAction{PIDFile: big}.Run(t.Context(), Event{})
	if err == nil || !strings.Contains(err.Error(), `first line "postgres" is not a process id`) {
		t.Errorf("Run() with a large pid file = %v, want its first line refused", err)
	}
}
