package filesink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sds-bridge/sds-bridge/rotation"
)

// Event describes the generation an action reacts to.
type Event struct {
	// Dir is the credential folder (the stable names live there).
	Dir        string
	Generation uint64
	SPIFFEID   string
	NotAfter   time.Time
}

// Action tells a consumer that a new generation is in place. Run must
// return when ctx ends.
type Action interface {
	// Name identifies the action in logs ("signal:/var/lib/postgresql/data/postmaster.pid").
	Name() string
	Run(ctx context.Context, e Event) error
}

const (
	defaultExecTimeout = 30 * time.Second
	// execWaitDelay bounds how long Run waits for the output pipes after the
	// process is gone (a grandchild may still hold them open).
	execWaitDelay = time.Second
	stderrTail    = 1024
	maxBackoff    = 30 * time.Second
)

// SignalAction signals the process whose pid is on the first line of
// PIDFile, e.g. PostgreSQL's postmaster.pid: SIGHUP makes PostgreSQL
// reload ssl_cert_file, ssl_key_file and ssl_ca_file.
type SignalAction struct {
	PIDFile string
	// Signal defaults to SIGHUP.
	Signal syscall.Signal
}

// Name implements Action.
func (a SignalAction) Name() string { return "signal:" + a.PIDFile }

func (a SignalAction) validate() error {
	if a.PIDFile == "" {
		return errors.New("signal action: pid file must be set")
	}
	return nil
}

// Run re-reads the pid file every time: the process may have restarted
// with another pid since the last generation.
func (a SignalAction) Run(ctx context.Context, _ Event) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("filesink: signal action: %w", err)
	}
	sig := a.Signal
	if sig == 0 {
		sig = syscall.SIGHUP
	}
	pid, err := readPID(a.PIDFile)
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return fmt.Errorf("filesink: signal action: send %s to pid %d from %s: %w", sig, pid, a.PIDFile, err)
	}
	return nil
}

func readPID(path string) (int, error) {
	data, err := readBounded(path)
	if err != nil {
		return 0, fmt.Errorf("filesink: signal action: read pid file: %w", err)
	}
	first, _, _ := strings.Cut(string(data), "\n")
	first = strings.TrimSpace(first)
	pid, err := strconv.Atoi(first)
	// 0 and negative pids would signal whole process groups.
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("filesink: signal action: pid file %s: first line %q is not a process id", path, first)
	}
	return pid, nil
}

// ExecAction runs a command directly (no shell) with the event in its
// environment: SDS_BRIDGE_DIR, SDS_BRIDGE_GENERATION, SDS_BRIDGE_SPIFFE_ID
// and SDS_BRIDGE_NOT_AFTER (RFC 3339). A command still running at Timeout is
// killed with its whole process group.
type ExecAction struct {
	Command []string
	// Timeout defaults to 30 s.
	Timeout time.Duration
}

// Name implements Action.
func (a ExecAction) Name() string {
	if len(a.Command) == 0 {
		return "exec:"
	}
	return "exec:" + a.Command[0]
}

func (a ExecAction) validate() error {
	if len(a.Command) == 0 || a.Command[0] == "" {
		return errors.New("exec action: command must not be empty")
	}
	if a.Timeout < 0 {
		return fmt.Errorf("exec action: timeout %s: must not be negative", a.Timeout)
	}
	return nil
}

// Run implements Action.
func (a ExecAction) Run(ctx context.Context, e Event) error {
	if err := a.validate(); err != nil {
		return fmt.Errorf("filesink: %w", err)
	}
	timeout := a.Timeout
	if timeout == 0 {
		timeout = defaultExecTimeout
	}
	runCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	cmd := exec.CommandContext(runCtx, a.Command[0], a.Command[1:]...)
	cmd.Env = append(os.Environ(),
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
	if err == nil {
		return nil
	}
	where := "filesink: exec " + a.Command[0]
	if errors.Is(runCtx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
		where += fmt.Sprintf(": killed after timeout %s", timeout)
	}
	if tail := stderr.String(); tail != "" {
		return fmt.Errorf("%s: %w; stderr: %q", where, err, tail)
	}
	return fmt.Errorf("%s: %w", where, err)
}

// tailBuffer keeps the last max bytes written: the end of stderr is where
// the reason for a failure usually is.
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

// ErrReloadAction marks an Apply error that came from a reload action: the
// new generation is in place, but a consumer may not have picked it up. It
// wraps rotation.ErrUpdateInPlace: the source does not swap the same
// generation in again for it (the action has had its retries).
var ErrReloadAction error = reloadActionError{}

type reloadActionError struct{}

func (reloadActionError) Error() string {
	return "filesink: generation swapped in, reload action failed"
}
func (reloadActionError) Unwrap() error { return rotation.ErrUpdateInPlace }

// runActions runs every action once for ev, in order, each with retries.
// A failing action does not stop the next one; the errors are joined.
func (f *Folder) runActions(ctx context.Context, ev Event) error {
	var errs []error
	for i, a := range f.cfg.Actions {
		if err := f.runAction(ctx, i, a, ev); err != nil {
			errs = append(errs, err)
		}
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrReloadAction, errors.Join(errs...))
}

func (f *Folder) runAction(ctx context.Context, i int, a Action, ev Event) error {
	backoff := f.cfg.ActionBackoff
	for attempt := 1; ; attempt++ {
		err := a.Run(ctx, ev)
		f.stats.attempted(i, ev.Generation, attempt, err, f.cfg.Now())
		if err == nil {
			f.log.Info("filesink: reload action done", "action", a.Name(), "generation", ev.Generation, "attempt", attempt)
			return nil
		}
		f.log.Warn("filesink: reload action failed", "action", a.Name(), "generation", ev.Generation,
			"attempt", attempt, "attempts", f.cfg.ActionAttempts, "err", err)
		if attempt >= f.cfg.ActionAttempts {
			return fmt.Errorf("%w (action %s, generation %d, gave up after %d attempts)", err, a.Name(), ev.Generation, attempt)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (action %s, generation %d, stopped after %d attempts: %w)", err, a.Name(), ev.Generation, attempt, ctx.Err())
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}
