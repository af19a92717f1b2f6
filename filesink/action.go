package filesink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sds-bridge/sds-bridge/rotation"
)

// Event describes the generation an action reacts to.
type Event struct {
	// Kind is what changed: EventX509 (a new set swapped in) or EventJWT
	// (a JWT-SVID or the JWT bundles rewritten); "" is EventX509.
	Kind EventKind
	// Dir is the credential folder (the stable names live there).
	Dir        string
	Generation uint64
	SPIFFEID   string
	NotAfter   time.Time
}

// EventKind is what an Event reports; its values are the config's
// on_rotate[].on values.
type EventKind string

// Event kinds.
const (
	EventX509 EventKind = "x509"
	EventJWT  EventKind = "jwt"
)

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
// with another pid since the last generation. A missing pid file, or one
// naming a process that is gone, is ErrNoServer: the server is not running
// and reads the current files when it starts.
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
		if errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("filesink: signal action: %w: send %s to pid %d from %s: %w", ErrNoServer, sig, pid, a.PIDFile, err)
		}
		return fmt.Errorf("filesink: signal action: send %s to pid %d from %s: %w", sig, pid, a.PIDFile, err)
	}
	return nil
}

// serverUp implements serverWatcher: the pid file names a live process.
// EPERM counts as live: the process exists, and Run reports why it cannot
// be signalled.
func (a SignalAction) serverUp() bool {
	pid, err := readPID(a.PIDFile)
	if err != nil {
		return false
	}
	err = syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

func readPID(path string) (int, error) {
	data, err := readBounded(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("filesink: signal action: %w: read pid file: %w", ErrNoServer, err)
	}
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
// environment: SDS_BRIDGE_EVENT (x509 or jwt), SDS_BRIDGE_DIR,
// SDS_BRIDGE_GENERATION, SDS_BRIDGE_SPIFFE_ID and SDS_BRIDGE_NOT_AFTER (RFC
// 3339; for jwt the token's expiry). A command still running at Timeout is
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
	kind := e.Kind
	if kind == "" {
		kind = EventX509
	}
	cmd.Env = append(os.Environ(),
		"SDS_BRIDGE_EVENT="+string(kind),
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

// ErrNoServer marks an action's outcome, not a failure: there is no server
// to reload (no pid file, a pid file naming a process that is gone, a
// PostgreSQL server that refused the connection before it ever answered).
// A server that starts later reads the files in place, so the action is
// not retried, not counted as a failure, and Apply does not return it.
// In Kubernetes the bridge is a sidecar that starts before its database:
// its first swap always meets this.
var ErrNoServer = errors.New("no server to reload")

// serverWatcher is an Action that can tell cheaply when its server has
// appeared, so that a Folder can reload it once then (see waitForServer).
type serverWatcher interface {
	serverUp() bool
}

// rememberer is an Action that keeps what it learnt across runs (whether
// its server ever answered); New gives each one its own memory.
type rememberer interface {
	withMemory() Action
}

// withMemory returns a copy of actions in which every rememberer has its
// own memory, shared by nobody else.
func withMemory(actions []Action) []Action {
	out := make([]Action, len(actions))
	for i, a := range actions {
		if r, ok := a.(rememberer); ok {
			a = r.withMemory()
		}
		out[i] = a
	}
	return out
}

// runActions runs every action once for ev, in order, each with retries.
// A failing action does not stop the next one; the errors are joined. It
// is called with f.mu held, for the generation just swapped in (or, from
// RerunActions and late reloads, the one in place).
func (f *Folder) runActions(ctx context.Context, ev Event) error {
	f.last = &ev
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

// RerunActions runs every reload action again for the generation in place
// (the last one swapped in), with the same rules as after a swap: retries,
// and no server to reload is not a failure. It is what SIGHUP does. Before
// the first swap there is nothing to reload and it returns nil.
func (f *Folder) RerunActions(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.last == nil {
		f.log.Info("filesink: no generation swapped in yet: no reload action to run again")
		return nil
	}
	f.log.Info("filesink: running reload actions again", "generation", f.last.Generation)
	return f.runActions(ctx, *f.last)
}

func (f *Folder) runAction(ctx context.Context, i int, a Action, ev Event) error {
	backoff := f.cfg.ActionBackoff
	for attempt := 1; ; attempt++ {
		err := a.Run(ctx, ev)
		f.stats.attempted(i, ev.Generation, attempt, err, f.cfg.Now())
		switch {
		case err == nil:
			f.late.forget(i)
			f.log.Info("filesink: reload action done", "action", a.Name(), "generation", ev.Generation, "attempt", attempt)
			return nil
		case errors.Is(err, ErrNoServer):
			f.log.Info("filesink: no server to reload: it reads the files in place when it starts",
				"action", a.Name(), "generation", ev.Generation, "reason", err)
			f.waitForServer(ctx, i, a)
			return nil
		}
		f.late.forget(i)
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

// lateReloads are the actions that found no server and wait for it to
// appear, and the one goroutine that watches for them. It has its own lock:
// the watcher reads it without holding the folder's.
type lateReloads struct {
	mu      sync.Mutex
	waiting map[int]bool
	// watching is the context of the goroutine that watches; nil: none.
	// One whose context ended is replaced by the next waitForServer.
	watching context.Context
}

func (l *lateReloads) forget(i int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.waiting, i)
}

func (l *lateReloads) isWaiting(i int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.waiting[i]
}

func (l *lateReloads) list() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]int, 0, len(l.waiting))
	for i := range l.waiting {
		out = append(out, i)
	}
	slices.Sort(out)
	return out
}

// stop reports whether the watcher of ctx should end (its context ended,
// another replaced it, or nothing waits any more), and if so, ends its turn.
func (l *lateReloads) stop(ctx context.Context) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.watching == ctx && ctx.Err() == nil && len(l.waiting) > 0 {
		return false
	}
	if l.watching == ctx {
		l.watching = nil
	}
	return true
}

// waitForServer remembers that action i found no server and, if the action
// can tell when its server appears, makes sure a goroutine watches for it:
// that goroutine runs the action once when it does (a server may have read
// the files just before a swap), then ends. It lives at most as long as ctx,
// the context of the Apply (or RerunActions) that found no server.
func (f *Folder) waitForServer(ctx context.Context, i int, a Action) {
	if _, ok := a.(serverWatcher); !ok || ctx.Err() != nil {
		return
	}
	l := &f.late
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.waiting == nil {
		l.waiting = map[int]bool{}
	}
	l.waiting[i] = true
	if l.watching != nil && l.watching.Err() == nil {
		return
	}
	l.watching = ctx
	go f.watchForServers(ctx)
}

// watchForServers polls every waiting action's server and reloads each one
// that has appeared. It ends when ctx ends or nothing waits any more.
func (f *Folder) watchForServers(ctx context.Context) {
	t := time.NewTicker(f.cfg.NoServerPoll)
	defer t.Stop()
	for !f.late.stop(ctx) {
		select {
		case <-ctx.Done():
			continue
		case <-t.C:
		}
		for _, i := range f.late.list() {
			if f.cfg.Actions[i].(serverWatcher).serverUp() {
				f.reloadLate(ctx, i)
			}
		}
	}
}

// reloadLate runs action i once for the generation in place, now that its
// server is up, unless an Apply ran it meanwhile.
func (f *Folder) reloadLate(ctx context.Context, i int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.late.isWaiting(i) || f.last == nil || ctx.Err() != nil {
		return
	}
	a := f.cfg.Actions[i]
	f.log.Info("filesink: the server appeared after the swap: reloading it once anyway",
		"action", a.Name(), "generation", f.last.Generation)
	// The outcome lands in Stats and the log, as for any run.
	_ = f.runAction(ctx, i, a, *f.last)
}
