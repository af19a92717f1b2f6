package filesink

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sds-bridge/sds-bridge/internal/ca"
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
	c := newCA(t, "example.org")
	f, _ := newFolder(t, Config{Actions: []Action{action}})

	// The pid file is read at every run: a restarted process has a new pid.
	for gen := uint64(1); gen <= 2; gen++ {
		w := startSighupWaiter(t)
		writePIDFile(t, pidFile, w.pid)
		if err := f.Apply(t.Context(), update(gen, c.issue(t, ca.SVIDOptions{}), c.Bundle())); err != nil {
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

// scriptedAction fails a given number of times, then succeeds, recording
// every call.
type scriptedAction struct {
	name     string
	failures int
	onRun    func(call int)

	mu     sync.Mutex
	calls  int
	events []Event
	log    *[]string
}

func (a *scriptedAction) Name() string { return a.name }

func (a *scriptedAction) Run(ctx context.Context, e Event) error {
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

func TestActionsRunAfterSwapWithRetries(t *testing.T) {
	c := newCA(t, "example.org")
	svid := c.issue(t, ca.SVIDOptions{})

	t.Run("in order, retried, with the event", func(t *testing.T) {
		var order []string
		first := &scriptedAction{name: "first", failures: 2, log: &order}
		second := &scriptedAction{name: "second", log: &order}
		f, logs := newFolder(t, Config{Actions: []Action{first, second}, ActionBackoff: time.Millisecond})
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
		if want := []string{"first", "first", "first", "second"}; !slices.Equal(order, want) {
			t.Errorf("calls = %v, want %v", order, want)
		}
		want := Event{Kind: EventX509, Dir: f.Dir(), Generation: 5, SPIFFEID: svid.ID.String(), NotAfter: svid.Certificates[0].NotAfter.UTC()}
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
		f, _ := newFolder(t, Config{Actions: []Action{broken, next}, ActionAttempts: 2, ActionBackoff: time.Millisecond})
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
		if m, err := Inspect(f.InspectConfig(0)); err != nil || m.Generation != 8 {
			t.Errorf("after a failed action Inspect = %+v, %v; want generation 8 in place", m, err)
		}
	})

	t.Run("retries stop when ctx ends", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		stuck := &scriptedAction{name: "stuck", failures: 1 << 30, onRun: func(call int) {
			if call == 3 {
				cancel()
			}
		}}
		never := &scriptedAction{name: "never"}
		f, _ := newFolder(t, Config{Actions: []Action{stuck, never}, ActionAttempts: 1000, ActionBackoff: time.Millisecond})
		err := f.Apply(ctx, update(9, svid, c.Bundle()))
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Apply() error = %v, want context.Canceled", err)
		}
		if stuck.calls != 3 || never.calls != 0 {
			t.Errorf("calls: stuck %d, never %d; want 3 and 0", stuck.calls, never.calls)
		}
	})

	t.Run("no action after a failed write", func(t *testing.T) {
		blocker := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(blocker, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		a := &scriptedAction{name: "a"}
		f, _ := newFolder(t, Config{Dir: filepath.Join(blocker, "creds"), Actions: []Action{a}})
		if err := f.Apply(t.Context(), update(1, svid, c.Bundle())); err == nil {
			t.Fatal("Apply() succeeded with a regular file where the folder's parent should be")
		}
		if a.calls != 0 {
			t.Errorf("action ran %d times after a failed write", a.calls)
		}
	})

	t.Run("exec action bounded by its timeout", func(t *testing.T) {
		f, _ := newFolder(t, Config{
			Actions:        []Action{ExecAction{Command: []string{os.Args[0], helperArg, "sleep"}, Timeout: 50 * time.Millisecond}},
			ActionAttempts: 2, ActionBackoff: time.Millisecond,
		})
		err := f.Apply(t.Context(), update(1, svid, c.Bundle()))
		if err == nil || !strings.Contains(err.Error(), "killed after timeout") {
			t.Fatalf("Apply() error = %v, want the timeout", err)
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
// failure. It is tried once, not counted, Apply succeeds and Stats says
// so. A pid file that cannot be understood is still a failure.
func TestSignalActionWithoutServerIsNoServerToReload(t *testing.T) {
	c := newCA(t, "example.org")
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

			f, logs := newFolder(t, Config{Actions: []Action{a}, ActionAttempts: 3, ActionBackoff: time.Millisecond})
			if err := f.Apply(t.Context(), update(1, c.issue(t, ca.SVIDOptions{}), c.Bundle())); err != nil {
				t.Fatalf("Apply() = %v, want no error: there is no server to reload", err)
			}
			st := f.Stats().Actions[0]
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
		f, _ := newFolder(t, Config{Actions: []Action{SignalAction{PIDFile: pidFile}}, ActionAttempts: 2, ActionBackoff: time.Millisecond})
		err := f.Apply(t.Context(), update(1, c.issue(t, ca.SVIDOptions{}), c.Bundle()))
		if !errors.Is(err, ErrReloadAction) || errors.Is(err, ErrNoServer) {
			t.Fatalf("Apply() = %v, want a reload failure", err)
		}
		if st := f.Stats().Actions[0]; !st.Failed() || st.Failures != 2 {
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
	c := newCA(t, "example.org")
	const poll = 10 * time.Millisecond
	pidFile := filepath.Join(t.TempDir(), "postmaster.pid")
	f, logs := newFolder(t, Config{Actions: []Action{SignalAction{PIDFile: pidFile}}, NoServerPoll: poll, ActionBackoff: time.Millisecond})
	if err := f.Apply(t.Context(), update(1, c.issue(t, ca.SVIDOptions{}), c.Bundle())); err != nil {
		t.Fatalf("Apply() before the server exists = %v, want no error", err)
	}

	w := startSighupWaiter(t)
	writePIDFile(t, pidFile, w.pid)
	if !w.wait(t) {
		t.Fatalf("process %d, started after the swap, did not get SIGHUP", w.pid)
	}
	testkit.Eventually(t, "the late reload recorded", func() bool {
		st := f.Stats().Actions[0]
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

// The watch for a late server ends with the context of the Apply that
// started it, and sends nothing after that.
func TestWatchForLateServerEndsWithItsContext(t *testing.T) {
	c := newCA(t, "example.org")
	const poll = 10 * time.Millisecond
	pidFile := filepath.Join(t.TempDir(), "postmaster.pid")
	f, _ := newFolder(t, Config{Actions: []Action{SignalAction{PIDFile: pidFile}}, NoServerPoll: poll})
	ctx, cancel := context.WithCancel(t.Context())
	if err := f.Apply(ctx, update(1, c.issue(t, ca.SVIDOptions{}), c.Bundle())); err != nil {
		t.Fatal(err)
	}
	cancel()
	w := startSighupWaiter(t)
	writePIDFile(t, pidFile, w.pid)
	time.Sleep(20 * poll)
	if w.got() {
		t.Errorf("SIGHUP sent after the Apply's context ended")
	}
	if st := f.Stats().Actions[0]; !st.NoServer() {
		t.Errorf("action stats = %+v, want still no server", st)
	}
}

// RerunActions (what SIGHUP does) runs every action again for the
// generation in place, with the rules of a swap: no server is no failure,
// a failure is retried and returned. Before the first swap it does nothing.
func TestRerunActions(t *testing.T) {
	c := newCA(t, "example.org")
	dir := t.TempDir()
	pidFile, failFlag := filepath.Join(dir, "postmaster.pid"), filepath.Join(dir, "fail")
	recorder := &scriptedAction{name: "recorder"}
	refusing := ExecAction{Command: []string{"/bin/sh", "-c", `test ! -e "$0"`, failFlag}}
	f, _ := newFolder(t, Config{
		Actions:        []Action{recorder, SignalAction{PIDFile: pidFile}, refusing},
		ActionAttempts: 2, ActionBackoff: time.Millisecond,
	})

	if err := f.RerunActions(t.Context()); err != nil || recorder.calls != 0 {
		t.Fatalf("before the first swap: RerunActions() = %v with %d runs, want nothing done", err, recorder.calls)
	}

	first := startSighupWaiter(t)
	writePIDFile(t, pidFile, first.pid)
	svid := c.issue(t, ca.SVIDOptions{})
	if err := f.Apply(t.Context(), update(4, svid, c.Bundle())); err != nil {
		t.Fatal(err)
	}
	if !first.wait(t) {
		t.Fatal("the swap did not signal the server")
	}

	second := startSighupWaiter(t)
	writePIDFile(t, pidFile, second.pid)
	if err := f.RerunActions(t.Context()); err != nil {
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
	err := f.RerunActions(t.Context())
	if !errors.Is(err, ErrReloadAction) || errors.Is(err, ErrNoServer) || !strings.Contains(err.Error(), "gave up after 2 attempts") {
		t.Fatalf("RerunActions() = %v, want the exec failure only", err)
	}
	st := f.Stats().Actions
	if !st[1].NoServer() || st[1].Failures != 0 || !st[2].Failed() || st[2].Generation != 4 {
		t.Errorf("action stats = %+v, want the signal action without server and the exec action failed", st)
	}
}
