package reload

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"time"
)

const (
	defaultAttempts     = 3
	defaultBackoff      = 200 * time.Millisecond
	defaultNoServerPoll = time.Second
	maxBackoff          = 30 * time.Second
)

// Validator is an Action that New asks to check its settings.
type Validator interface {
	Validate() error
}

// Rememberer is an Action that keeps what it learnt across runs; New gives
// each Runner's copy memory of its own.
type Rememberer interface {
	WithMemory() Action
}

// serverWatcher is an Action that can tell cheaply when its server has
// appeared, to be reloaded once then (see waitForServer).
type serverWatcher interface {
	serverUp() bool
}

// Config describes one folder's reload actions.
type Config struct {
	// Actions run in order for every EventX509, each with retries; Stats
	// reports them.
	Actions []Action
	// JWTActions run in order, once each, for every EventJWT; a failure is
	// logged. An action in both lists shares its memory.
	JWTActions []Action
	// Attempts (default 3) is how often an X.509 action is tried per
	// generation; Backoff (default 200 ms) the first pause, then doubled.
	Attempts int
	Backoff  time.Duration
	// NoServerPoll (default 1 s) is how often an action that found
	// ErrNoServer checks whether its server has appeared.
	NoServerPoll time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now defaults to time.Now; tests move the clock.
	Now func() time.Time
}

// Runner runs one folder's reload actions, one run at a time: its X.509
// and JWT writers share it, so a consumer is never reloaded twice at once.
// Submit does not wait: a swap never waits for a consumer.
type Runner struct {
	cfg Config
	log *slog.Logger

	// mu serialises every run of the actions; it guards last, the X.509
	// event run last, for Rerun and late reloads.
	mu   sync.Mutex
	last *Event

	// state guards the fields below and is never held while an action
	// runs: Submit and Stats go on while one hangs.
	state sync.Mutex
	// pending is a one-slot, latest-wins mailbox, as in rotation.
	pending   *Event
	submitted worker
	// noServer[i]: action i waits for its server; lateServers watches.
	noServer    []bool
	lateServers worker
	stats       []ActionStats
	lastSignal  time.Time
}

// New applies defaults to cfg, validates it and returns the runner.
func New(cfg Config) (*Runner, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.Actions, cfg.JWTActions = withMemory(cfg.Actions, cfg.JWTActions)
	n := len(cfg.Actions)
	r := &Runner{cfg: cfg, log: cfg.Logger, noServer: make([]bool, n), stats: make([]ActionStats, n)}
	for i, a := range cfg.Actions {
		r.stats[i].Action = a.Name()
	}
	return r, nil
}

func (c Config) withDefaults() Config {
	c.Attempts = cmp.Or(c.Attempts, defaultAttempts)
	c.Backoff = cmp.Or(c.Backoff, defaultBackoff)
	c.NoServerPoll = cmp.Or(c.NoServerPoll, defaultNoServerPoll)
	c.Logger = cmp.Or(c.Logger, slog.Default())
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

func (c Config) validate() error {
	if c.Attempts < 1 {
		return fmt.Errorf("action attempts %d: must be at least 1", c.Attempts)
	}
	if c.Backoff < 0 {
		return fmt.Errorf("action backoff %s: must not be negative", c.Backoff)
	}
	if c.NoServerPoll < 0 {
		return fmt.Errorf("no-server poll %s: must not be negative", c.NoServerPoll)
	}
	for _, list := range []struct {
		what    string
		actions []Action
	}{{"action", c.Actions}, {"jwt action", c.JWTActions}} {
		for i, a := range list.actions {
			if a == nil {
				return fmt.Errorf("%s %d: nil", list.what, i)
			}
			if v, ok := a.(Validator); ok {
				if err := v.Validate(); err != nil {
					return fmt.Errorf("%s %d: %w", list.what, i, err)
				}
			}
		}
	}
	return nil
}

// withMemory returns copies of both lists in which every Rememberer has
// memory of its own; one action in both lists keeps one memory.
func withMemory(x509, jwt []Action) (x, j []Action) {
	copies := map[Action]Action{}
	own := func(actions []Action) []Action {
		out := slices.Clone(actions)
		for i, a := range actions {
			r, ok := a.(Rememberer)
			switch {
			case !ok:
			case !reflect.TypeOf(a).Comparable():
				out[i] = r.WithMemory()
			default:
				if copies[a] == nil {
					copies[a] = r.WithMemory()
				}
				out[i] = copies[a]
			}
		}
		return out
	}
	return own(x509), own(jwt)
}

// Run runs the actions for ev after any run in progress, and waits for
// them. For EventX509 each gets its retries and the failures are returned
// joined; for EventJWT each runs once and a failure is logged.
func (r *Runner) Run(ctx context.Context, ev Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ev.Kind == EventJWT {
		r.runJWT(ctx, ev)
		return nil
	}
	return r.runX509(ctx, ev)
}

// Rerun runs every X.509 action again for the generation in place, as Run
// does (SIGHUP). Before the first run it does nothing.
func (r *Runner) Rerun(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last == nil {
		r.log.Info("no generation swapped in yet: no reload action to run again")
		return nil
	}
	r.log.Info("running reload actions again", "generation", r.last.Generation)
	return r.runX509(ctx, *r.last)
}

func (r *Runner) runJWT(ctx context.Context, ev Event) {
	for _, a := range r.cfg.JWTActions {
		switch err := a.Run(ctx, ev); {
		case err == nil:
			r.noteSignal(a)
		case ctx.Err() == nil:
			r.log.Error("JWT reload action failed", "action", a.Name(), "error", err)
		}
	}
}

// runX509 runs every action for ev, a failure not stopping the next one.
// r.mu is held.
func (r *Runner) runX509(ctx context.Context, ev Event) error {
	r.last = &ev
	var errs []error
	for i, a := range r.cfg.Actions {
		if err := r.runAction(ctx, i, a, ev); err != nil {
			errs = append(errs, err)
		}
		if ctx.Err() != nil {
			break
		}
	}
	return errors.Join(errs...)
}

func (r *Runner) runAction(ctx context.Context, i int, a Action, ev Event) error {
	r.running(i, ev.Generation, r.cfg.Now())
	defer r.running(i, 0, time.Time{})
	backoff := r.cfg.Backoff
	for attempt := 1; ; attempt++ {
		err := a.Run(ctx, ev)
		r.attempted(i, ev.Generation, attempt, err)
		switch {
		case err == nil:
			r.noteSignal(a)
			r.log.Info("reload action done", "action", a.Name(), "generation", ev.Generation, "attempt", attempt)
			return nil
		case errors.Is(err, ErrNoServer):
			r.log.Info("no server to reload: it reads the files in place when it starts",
				"action", a.Name(), "generation", ev.Generation, "reason", err)
			r.waitForServer(ctx, i, a)
			return nil
		}
		r.log.Warn("reload action failed", "action", a.Name(), "generation", ev.Generation,
			"attempt", attempt, "attempts", r.cfg.Attempts, "err", err)
		if attempt >= r.cfg.Attempts {
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

// waitForServer makes sure a goroutine, living at most as long as ctx,
// watches for action i's server, to run it once when it appears: that
// server may have read the files just before the swap.
func (r *Runner) waitForServer(ctx context.Context, i int, a Action) {
	if _, ok := a.(serverWatcher); !ok || ctx.Err() != nil {
		return
	}
	r.state.Lock()
	defer r.state.Unlock()
	r.noServer[i] = true
	r.lateServers.start(ctx, r.watchForServers)
}

// watchForServers polls until ctx ends or no action waits.
func (r *Runner) watchForServers(ctx context.Context) {
	t := time.NewTicker(r.cfg.NoServerPoll)
	defer t.Stop()
	for r.watchGoesOn(ctx) {
		select {
		case <-ctx.Done():
			continue
		case <-t.C:
		}
		for i, a := range r.cfg.Actions {
			if r.waitsForServer(i) && a.(serverWatcher).serverUp() {
				r.reloadLate(ctx, i)
			}
		}
	}
}

func (r *Runner) watchGoesOn(ctx context.Context) bool {
	r.state.Lock()
	defer r.state.Unlock()
	return r.lateServers.goOn(ctx, slices.Contains(r.noServer, true))
}

func (r *Runner) waitsForServer(i int) bool {
	r.state.Lock()
	defer r.state.Unlock()
	return r.noServer[i]
}

// reloadLate runs action i once for the generation in place, unless a Run
// ran it meanwhile.
func (r *Runner) reloadLate(ctx context.Context, i int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.waitsForServer(i) || r.last == nil || ctx.Err() != nil {
		return
	}
	a := r.cfg.Actions[i]
	r.log.Info("the server appeared after the swap: reloading it once anyway",
		"action", a.Name(), "generation", r.last.Generation)
	_ = r.runAction(ctx, i, a, *r.last)
}
