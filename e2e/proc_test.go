//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// osUser is an account a child process runs as. The suite runs as root (as
// CI does) and drops to this account with a process credential rather than
// runuser, so that the PID the suite holds is the real process and a signal
// sent to it reaches the program itself.
type osUser struct {
	Name string
	UID  uint32
	GID  uint32
}

// Owner is the "uid:gid" form the bridge's config takes.
func (u *osUser) Owner() string { return fmt.Sprintf("%d:%d", u.UID, u.GID) }

func lookupUser(name string) (*osUser, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("e2e: look up OS user %q: %w", name, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("e2e: uid of %q: %w", name, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("e2e: gid of %q: %w", name, err)
	}
	return &osUser{Name: name, UID: uint32(uid), GID: uint32(gid)}, nil
}

// requireRoot stops a test early with the reason: switching to the
// PostgreSQL and Envoy-side accounts needs root.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("e2e: the suite must run as root: it starts PostgreSQL and bridges as other OS users (running as uid %d)", os.Geteuid())
	}
}

// cmdSpec describes one child process.
type cmdSpec struct {
	Name string   // short label for logs ("spire-agent", "bridge-db")
	Path string   // executable
	Args []string // arguments without argv[0]
	Dir  string   // working directory; the work dir when empty
	Env  []string // added to a minimal environment
	User *osUser  // run as this account; the suite's own when nil
}

func (s cmdSpec) command(ctx context.Context) *exec.Cmd {
	var cmd *exec.Cmd
	if ctx != nil {
		cmd = exec.CommandContext(ctx, s.Path, s.Args...)
	} else {
		cmd = exec.Command(s.Path, s.Args...)
	}
	cmd.Dir = s.Dir
	// A minimal environment: nothing of the developer's shell (a stray
	// SPIFFE_ENDPOINT_SOCKET, PGHOST, …) leaks into what is tested.
	cmd.Env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"LANG=C.UTF-8",
		"HOME=" + os.TempDir(),
	}, s.Env...)
	if s.User != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{
			Uid: s.User.UID, Gid: s.User.GID, Groups: []uint32{s.User.GID},
		}}
	}
	return cmd
}

// runCmd runs a short-lived command to completion and returns its combined
// output and exit code. err is set only when the command could not run at
// all or ctx ended; a non-zero exit is reported through the code.
func runCmd(ctx context.Context, s cmdSpec) (out string, code int, err error) {
	cmd := s.command(ctx)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err = cmd.Run()
	out = buf.String()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return out, 0, nil
	case ctx != nil && ctx.Err() != nil:
		return out, -1, fmt.Errorf("e2e: %s: %w (output: %s)", s.Name, ctx.Err(), oneLine(out))
	case errors.As(err, &exitErr):
		return out, exitErr.ExitCode(), nil
	default:
		return out, -1, fmt.Errorf("e2e: run %s: %w", s.Name, err)
	}
}

// mustRun runs a command that has to succeed.
func mustRun(t testing.TB, ctx context.Context, s cmdSpec) string {
	t.Helper()
	out, code, err := runCmd(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if code != 0 {
		t.Fatalf("e2e: %s %s: exit %d:\n%s", s.Name, strings.Join(s.Args, " "), code, out)
	}
	return out
}

// proc is a long-running child process. Its stdout and stderr go to a log
// file in the test's work dir; the tail of that file is printed when the
// test fails.
type proc struct {
	Name    string
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error // valid once done is closed
}

// startProc starts s with its output appended to logPath and registers a
// cleanup that stops it by PID (SIGTERM, then SIGKILL) and, if the test
// failed, prints the tail of its log.
func startProc(t testing.TB, s cmdSpec, logPath string) *proc {
	t.Helper()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatalf("e2e: open log of %s: %v", s.Name, err)
	}
	defer logf.Close() // the child holds its own descriptor
	fmt.Fprintf(logf, "==== %s: %s %s\n", time.Now().Format(time.RFC3339Nano), s.Path, strings.Join(s.Args, " "))
	cmd := s.command(nil)
	cmd.Stdout, cmd.Stderr = logf, logf
	// If the test binary dies (a -timeout panic, a kill), its children die
	// with it instead of holding ports and sockets.
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		t.Fatalf("e2e: start %s: %v", s.Name, err)
	}
	p := &proc{Name: s.Name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Stop(10 * time.Second)
		if t.Failed() {
			t.Logf("---- tail of %s (%s) ----\n%s", p.Name, p.LogPath, tailFile(p.LogPath, 60))
		}
	})
	return p
}

// PID is the process ID.
func (p *proc) PID() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ExitCode is the exit code once the process has ended (-1 when killed by a
// signal).
func (p *proc) ExitCode() int {
	<-p.done
	return p.cmd.ProcessState.ExitCode()
}

// Wait waits for the process to end on its own.
func (p *proc) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("e2e: wait for %s to exit: %w", p.Name, ctx.Err())
	}
}

// Stop sends SIGTERM and waits up to grace, then SIGKILL. It returns true
// when the process ended within grace (on its own or from SIGTERM).
func (p *proc) Stop(grace time.Duration) bool {
	if p.Exited() {
		return true
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return true
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return false
}

// Kill ends the process at once with SIGKILL, as a crash would.
func (p *proc) Kill() {
	if p.Exited() {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// tailFile returns the last n lines of path (or why it could not).
func tailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = "…" + s[i+1:]
	}
	return s
}

// newWorkDir makes a short temp dir for one test: unix socket paths inside
// it must stay under ~100 bytes, which t.TempDir's long names break. It is
// traversable by the other OS users the test runs processes as.
func newWorkDir(t testing.TB) string {
	t.Helper()
	base := os.TempDir()
	if len(base) > 40 {
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, "sb")
	if err != nil {
		t.Fatalf("e2e: work dir: %v", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("e2e: work dir: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() && os.Getenv("E2E_KEEP") != "" {
			t.Logf("keeping work dir %s", dir)
			return
		}
		_ = os.RemoveAll(dir)
	})
	return dir
}

// mkdirOwned creates dir with mode and hands it to u (when u is not nil).
func mkdirOwned(t testing.TB, dir string, mode os.FileMode, u *osUser) {
	t.Helper()
	if err := os.MkdirAll(dir, mode); err != nil {
		t.Fatalf("e2e: mkdir %s: %v", dir, err)
	}
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatalf("e2e: chmod %s: %v", dir, err)
	}
	if u != nil {
		if err := os.Chown(dir, int(u.UID), int(u.GID)); err != nil {
			t.Fatalf("e2e: chown %s: %v", dir, err)
		}
	}
}

// freePort asks the kernel for a free loopback TCP port. Another process
// could take it before it is used; on loopback in a test that is rare.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("e2e: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// poll calls f until it returns nil or ctx ends; the error says what was
// awaited and the last reason.
func poll(ctx context.Context, what string, every time.Duration, f func() error) error {
	var last error
	for {
		if last = f(); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("e2e: %s: %w (last: %v)", what, ctx.Err(), last)
		case <-time.After(every):
		}
	}
}

// writeFile writes data with mode, owned by u when u is not nil.
func writeFile(t testing.TB, path string, data []byte, mode os.FileMode, u *osUser) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatalf("e2e: write %s: %v", path, err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	if u != nil {
		if err := os.Chown(path, int(u.UID), int(u.GID)); err != nil {
			t.Fatalf("e2e: chown %s: %v", path, err)
		}
	}
}

func uidString(id uint32) string { return strconv.FormatUint(uint64(id), 10) }
