// Package reload runs a credential folder's reload actions: signal a pid
// file, run a command (and, in pgreload, SELECT pg_reload_conf()). One
// Runner per folder serialises every run, whether a new X.509 set or a new
// JWT file triggered it, so a consumer is never reloaded twice at once.
package reload

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sds-bridge/sds-bridge/internal/fielderr"
)

// Event describes the generation an action reacts to.
type Event struct {
	// Kind is what changed; "" is EventX509.
	Kind       EventKind
	Dir        string
	Generation uint64
	SPIFFEID   string
	NotAfter   time.Time
}

// EventKind is what an Event reports: a new X.509 set swapped in, or a
// JWT-SVID or the JWT bundles rewritten.
type EventKind string

// Event kinds.
const (
	EventX509 EventKind = "x509"
	EventJWT  EventKind = "jwt"
)

// Action tells a consumer that a new generation is in place. Run must
// return when ctx ends.
type Action interface {
	// Name identifies the action in logs ("signal:/path/postmaster.pid").
	Name() string
	Run(ctx context.Context, e Event) error
}

const (
	// DefaultExecTimeout bounds an ExecAction without a Timeout.
	DefaultExecTimeout = 30 * time.Second
	// execWaitDelay bounds the wait for the output pipes after the process
	// is gone (a grandchild may hold them).
	execWaitDelay = time.Second
	stderrTail    = 1024
)

// SignalAction signals the process whose pid is on the first line of
// PIDFile, e.g. PostgreSQL's postmaster.pid.
type SignalAction struct {
	PIDFile string `yaml:"pid_file"`
	// Signal defaults to SIGHUP.
	Signal syscall.Signal `yaml:"signal"`
}

// Name implements Action.
func (a SignalAction) Name() string { return "signal:" + a.PIDFile }

// Sent is the signal Run sends: Signal, or SIGHUP.
func (a SignalAction) Sent() syscall.Signal { return cmp.Or(a.Signal, syscall.SIGHUP) }

// Validate implements Validator; the error's key is the YAML config's.
func (a SignalAction) Validate() error {
	if !filepath.IsAbs(a.PIDFile) {
		return fielderr.New("pid_file", "%q must be an absolute path (the pid file of the process to signal)", a.PIDFile)
	}
	return nil
}

// Run re-reads the pid file every time: the process may have restarted
// with another pid since the last generation. A missing pid file, or one
// naming a process that is gone, is ErrNoServer: the server is not running
// and reads the current files when it starts.
func (a SignalAction) Run(ctx context.Context, _ Event) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("signal action: %w", err)
	}
	sig := a.Sent()
	pid, err := readPID(a.PIDFile)
	if err != nil {
		return err
	}
	if pid == os.Getpid() {
		// The bridge's own SIGHUP handler re-runs the actions: signalling
		// itself would loop for ever.
		return fmt.Errorf("signal action: pid file %s names pid %d, the bridge itself: refusing to signal it (its SIGHUP would re-run this action); point pid_file at the consumer's pid file", a.PIDFile, pid)
	}
	if err := syscall.Kill(pid, sig); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("signal action: %w: send %s to pid %d from %s: %w", ErrNoServer, sig, pid, a.PIDFile, err)
		}
		return fmt.Errorf("signal action: send %s to pid %d from %s: %w", sig, pid, a.PIDFile, err)
	}
	return nil
}

// serverUp implements serverWatcher. EPERM counts as live: the process
// exists, and Run reports why it cannot be signalled.
func (a SignalAction) serverUp() bool {
	pid, err := readPID(a.PIDFile)
	if err != nil {
		return false
	}
	err = syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

func readPID(path string) (int, error) {
	first, err := firstLine(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("signal action: %w: read pid file: %w", ErrNoServer, err)
	}
	if err != nil {
		return 0, fmt.Errorf("signal action: read pid file: %w", err)
	}
	first = strings.TrimSpace(first)
	pid, err := strconv.Atoi(first)
	// 0 and negative pids would signal whole process groups.
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("signal action: pid file %s: first line %q is not a process id", path, first)
	}
	return pid, nil
}

// maxPIDLine bounds what is read of a pid file anyone may have planted.
const maxPIDLine = 128

// firstLine reads the first line of the regular file at path, opened
// without blocking: a FIFO planted there must not hang a reload.
func firstLine(path string) (string, error) {
	fh, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return "", err
	}
	defer fh.Close()
	if fi, err := fh.Stat(); err != nil {
		return "", err
	} else if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s: not a regular file (%s)", path, fi.Mode().Type())
	}
	data, err := io.ReadAll(io.LimitReader(fh, maxPIDLine))
	first, _, _ := strings.Cut(string(data), "\n")
	return first, err
}

// ExecAction runs a command directly (no shell) with the event in its
// environment (SDS_BRIDGE_*). Its exit status alone decides success; a
// daemon it leaves running is its choice, and not killed. Only a timeout
// kills, and only the command's process group.
type ExecAction struct {
	Command []string `yaml:"command"`
	// Timeout defaults to 30 s.
	Timeout time.Duration `yaml:"timeout"`
}

// Limit is how long the command may run: Timeout, or DefaultExecTimeout.
func (a ExecAction) Limit() time.Duration { return cmp.Or(a.Timeout, DefaultExecTimeout) }

// Name implements Action.
func (a ExecAction) Name() string {
	if len(a.Command) == 0 {
		return "exec:"
	}
	return "exec:" + a.Command[0]
}

// Validate implements Validator; the errors' keys are the YAML config's.
func (a ExecAction) Validate() error {
	var errs fielderr.List
	if len(a.Command) == 0 || a.Command[0] == "" {
		errs.Add("command", "missing: give the program and its arguments as a list")
	}
	if a.Timeout < 0 {
		errs.Add("timeout", "%s must not be negative", a.Timeout)
	}
	return errs.Err()
}

// Run implements Action.
func (a ExecAction) Run(ctx context.Context, e Event) error {
	if err := a.Validate(); err != nil {
		return err
	}
	timeout := a.Limit()
	runCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	cmd := exec.CommandContext(runCtx, a.Command[0], a.Command[1:]...)
	cmd.Env = append(os.Environ(),
		"SDS_BRIDGE_EVENT="+string(cmp.Or(e.Kind, EventX509)),
		"SDS_BRIDGE_DIR="+e.Dir,
		"SDS_BRIDGE_GENERATION="+strconv.FormatUint(e.Generation, 10),
		"SDS_BRIDGE_SPIFFE_ID="+e.SPIFFEID,
		"SDS_BRIDGE_NOT_AFTER="+e.NotAfter.UTC().Format(time.RFC3339),
	)
	// Its own process group, so a timeout also kills what a script started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = execWaitDelay
	stderr := &tailBuffer{max: stderrTail}
	cmd.Stderr = stderr

	err := cmd.Run()
	if err == nil || errors.Is(err, exec.ErrWaitDelay) {
		// ErrWaitDelay comes only after an exit status of 0: a daemon the
		// command started still holds its stderr.
		return nil
	}
	where := "exec " + a.Command[0]
	if errors.Is(runCtx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
		where += fmt.Sprintf(": killed after timeout %s", timeout)
	}
	if tail := stderr.String(); tail != "" {
		return fmt.Errorf("%s: %w; stderr: %q", where, err, tail)
	}
	return fmt.Errorf("%s: %w", where, err)
}

// tailBuffer keeps the last max bytes: the end of stderr usually says why.
type tailBuffer struct {
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(bytes.TrimSpace(t.buf)) }

// ErrNoServer marks an outcome that is not a failure: no server to reload
// (no pid file, a gone process, a PostgreSQL that never answered). One that
// starts later reads the files in place, so the action is not retried. A
// sidecar that starts before its database meets this on its first swap.
var ErrNoServer = errors.New("no server to reload")
