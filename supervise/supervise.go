// Package supervise runs the program the credentials are for as the
// bridge's child, as spiffe-helper runs its cmd: it starts once every sink
// holds a valid set (never meeting a previous pod's files), gets a renew
// signal after each swap, and its exit status becomes the bridge's.
package supervise

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Restart says what happens when the child exits on its own.
type Restart string

const (
	// RestartNever (the default): the bridge exits with the child's status.
	RestartNever Restart = "never"
	// RestartOnFailure restarts, with backoff, a child that failed or was
	// killed by a signal nobody forwarded.
	RestartOnFailure Restart = "on-failure"
)

const (
	defaultStopTimeout = 30 * time.Second
	defaultStartGrace  = time.Second
	defaultMinBackoff  = time.Second
	defaultMaxBackoff  = 30 * time.Second
	// signalWait is how long a stop without a caught signal waits for one
	// before SIGTERM: the context may end a moment before it arrives.
	signalWait = 100 * time.Millisecond
)

// Config is what to run and how.
type Config struct {
	// Command is the program and its arguments (no shell).
	Command []string
	// RenewSignal is sent to the child after each swap; 0 sends nothing.
	RenewSignal syscall.Signal
	Restart     Restart
	// Signals are the SIGINT/SIGTERM the bridge caught, forwarded to the
	// child; a stop without one sends SIGTERM.
	Signals <-chan os.Signal
	// StopTimeout is how long a stopping child may take before SIGKILL.
	StopTimeout time.Duration
	// StartGrace holds back renew signals after a start, for a program
	// that has no handler yet (SIGHUP's default action is to terminate).
	StartGrace time.Duration
	// MinBackoff and MaxBackoff bound the wait between restarts.
	MinBackoff, MaxBackoff time.Duration
	// Stdout and Stderr default to the bridge's own.
	Stdout, Stderr io.Writer
	Logger         *slog.Logger
}

// Supervisor runs one child. Offer may be called from any goroutine,
// before or during Run.
type Supervisor struct {
	cfg       Config
	ready     chan struct{}
	readyOnce sync.Once
	renew     chan struct{} // one slot: wakes Run when a larger set is offered

	mu  sync.Mutex
	set uint64 // the largest set number offered
}

// New checks cfg and applies defaults.
func New(cfg Config) (*Supervisor, error) {
	if len(cfg.Command) == 0 || cfg.Command[0] == "" {
		return nil, errors.New("no command")
	}
	switch cfg.Restart {
	case "":
		cfg.Restart = RestartNever
	case RestartNever, RestartOnFailure:
	default:
		return nil, fmt.Errorf("restart %q: want %s or %s", cfg.Restart, RestartNever, RestartOnFailure)
	}
	cfg.StopTimeout = cmp.Or(cfg.StopTimeout, defaultStopTimeout)
	cfg.StartGrace = cmp.Or(cfg.StartGrace, defaultStartGrace)
	cfg.MinBackoff = cmp.Or(cfg.MinBackoff, defaultMinBackoff)
	cfg.MaxBackoff = max(cmp.Or(cfg.MaxBackoff, defaultMaxBackoff), cfg.MinBackoff)
	cfg.Stdout = cmp.Or[io.Writer](cfg.Stdout, os.Stdout)
	cfg.Stderr = cmp.Or[io.Writer](cfg.Stderr, os.Stderr)
	cfg.Logger = cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler))
	return &Supervisor{cfg: cfg, ready: make(chan struct{}), renew: make(chan struct{}, 1)}, nil
}

// Offer says every sink holds a valid set, numbered (a swap makes a
// larger one); the first lets the child start. The child gets RenewSignal
// only for a set larger than the one offered when it started, whose files
// it read.
func (s *Supervisor) Offer(set uint64) {
	s.mu.Lock()
	grew := set > s.set
	s.set = max(s.set, set)
	s.mu.Unlock()
	s.readyOnce.Do(func() { close(s.ready) })
	if !grew {
		return
	}
	select {
	case s.renew <- struct{}{}:
	default:
	}
}

func (s *Supervisor) offered() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.set
}

// ExitError is a child's exit with a non-zero status, or by a signal.
type ExitError struct {
	Program string
	// Code is the exit status, or 128 + the signal, as a shell reports it.
	Code   int
	Signal syscall.Signal // 0 when the child exited
}

func (e *ExitError) Error() string {
	if e.Signal != 0 {
		return fmt.Sprintf("supervised program %s killed by %s (status %d)", e.Program, signalName(e.Signal), e.Code)
	}
	return fmt.Sprintf("supervised program %s exited with status %d", e.Program, e.Code)
}

// ExitCode is the status the bridge exits with.
func (e *ExitError) ExitCode() int { return e.Code }

// Run waits for the first Offer, starts the child and supervises it until
// it exits without a restart: nil for status 0 (or never started), else an
// *ExitError or the error starting it. When ctx ends the child is stopped
// (SIGKILL after StopTimeout) and Run returns once it has exited.
func (s *Supervisor) Run(ctx context.Context) error {
	log := s.cfg.Logger
	select {
	case <-ctx.Done():
		log.Info("supervised program: stopped before every folder held a complete set; the program was not started", "command", s.cfg.Command)
		return nil
	case <-s.ready:
	}
	backoff := s.cfg.MinBackoff
	for {
		// Read before the fork, so a swap reported after it is signalled.
		r := &renewal{s: s, seen: s.offered(), started: time.Now()}
		c, done, err := s.start()
		if err != nil {
			return fmt.Errorf("start %q: %w", s.cfg.Command[0], err)
		}
		log.Info("supervised program: started", "command", s.cfg.Command, "pid", c.Process.Pid)
		waitErr, stopping := s.watch(ctx, c, done, r)
		ee, err := exitStatus(s.cfg.Command[0], waitErr)
		if err != nil {
			return err
		}
		ran := time.Since(r.started).Round(time.Millisecond)
		if ee == nil {
			log.Info("supervised program: exited with status 0", "pid", c.Process.Pid, "ran", ran)
			return nil
		}
		if stopping || s.cfg.Restart != RestartOnFailure {
			log.Info("supervised program: exited", "pid", c.Process.Pid, "status", ee.Code, "ran", ran, "err", ee)
			return ee
		}
		if ran > s.cfg.MaxBackoff {
			backoff = s.cfg.MinBackoff // it ran a while: a new failure
		}
		log.Warn("supervised program: exited; restarting (restart: on-failure)", "pid", c.Process.Pid, "status", ee.Code, "ran", ran, "in", backoff)
		select {
		case <-ctx.Done():
			return ee
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, s.cfg.MaxBackoff)
	}
}

// start starts the child from a goroutine locked to its OS thread, which
// waits for it: Pdeathsig fires when the thread that forked the child ends.
func (s *Supervisor) start() (*exec.Cmd, <-chan error, error) {
	c := exec.Command(s.cfg.Command[0], s.cfg.Command[1:]...)
	c.Stdin = nil
	c.Stdout, c.Stderr = s.cfg.Stdout, s.cfg.Stderr
	c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	started := make(chan error, 1)
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := c.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		done <- c.Wait()
	}()
	if err := <-started; err != nil {
		return nil, nil, err
	}
	return c, done, nil
}

// watch signals the child until it exits and returns Wait's error, and
// whether the bridge asked it to stop.
func (s *Supervisor) watch(ctx context.Context, c *exec.Cmd, done <-chan error, r *renewal) (waitErr error, stopping bool) {
	send := func(sig os.Signal, why string) { s.signal(c.Process, sig, why) }
	var killC <-chan time.Time
	stop := func() {
		stopping = true
		killC = time.After(s.cfg.StopTimeout)
	}
	ctxDone := ctx.Done()
	for {
		select {
		case err := <-done:
			return err, stopping
		case <-s.renew:
			if !stopping && r.due() {
				send(s.cfg.RenewSignal, "a folder was swapped")
			}
		case <-r.graceC:
			r.graceC = nil
			if !stopping && r.due() {
				send(s.cfg.RenewSignal, "a folder was swapped while the program started")
			}
		case sig := <-s.cfg.Signals:
			send(sig, "the bridge received it")
			if !stopping {
				stop()
			}
		case <-ctxDone:
			ctxDone = nil
			if stopping {
				continue
			}
			select {
			case sig := <-s.cfg.Signals:
				send(sig, "the bridge received it")
			case <-time.After(signalWait):
				send(syscall.SIGTERM, "the bridge is stopping")
			case err := <-done:
				return err, true
			}
			stop()
		case <-killC:
			killC = nil
			send(syscall.SIGKILL, fmt.Sprintf("still running %s after it was asked to stop", s.cfg.StopTimeout))
		}
	}
}

func (s *Supervisor) signal(p *os.Process, sig os.Signal, why string) {
	log := s.cfg.Logger.With("pid", p.Pid, "signal", signalName(sig), "why", why)
	if err := p.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		log.Warn("supervised program: signal failed", "err", err)
		return
	}
	log.Info("supervised program: signalled")
}

// renewal decides when one run of the child gets RenewSignal.
type renewal struct {
	s       *Supervisor
	started time.Time
	// seen is the newest set the child may have read.
	seen uint64
	// graceC fires when StartGrace ends, if a newer set came in it.
	graceC <-chan time.Time
}

// due reports whether a newer set was offered and the start grace is
// over; in the grace it arms graceC.
func (r *renewal) due() bool {
	set := r.s.offered()
	if r.s.cfg.RenewSignal == 0 || set <= r.seen {
		return false
	}
	if wait := r.s.cfg.StartGrace - time.Since(r.started); wait > 0 {
		if r.graceC == nil {
			r.graceC = time.After(wait)
		}
		return false
	}
	r.seen = set
	return true
}

// exitStatus turns Wait's error into the child's exit (nil: status 0).
func exitStatus(program string, err error) (*ExitError, error) {
	var xe *exec.ExitError
	switch {
	case err == nil:
		return nil, nil
	case !errors.As(err, &xe):
		return nil, fmt.Errorf("wait for %s: %w", program, err)
	}
	if ws, ok := xe.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return &ExitError{Program: program, Code: 128 + int(ws.Signal()), Signal: ws.Signal()}, nil
	}
	return &ExitError{Program: program, Code: xe.ExitCode()}, nil
}

// signalName is "SIGHUP" rather than syscall's "hangup".
func signalName(sig os.Signal) string {
	if s, ok := sig.(syscall.Signal); ok && unix.SignalName(s) != "" {
		return unix.SignalName(s)
	}
	return sig.String()
}
