// Package bridge builds the whole sds-bridge from a validated config and
// runs it: the rotation source, its sinks (the SDS server, the credential
// folders), the JWT writer, the admin listener and the supervised program.
// The command line only parses flags and calls New, then Run.
//
// The data path is one way: config → Workload API → rotation.Source →
// each sink's mailbox → sds.Server / filesink.Folder (→ its reload.Runner).
// Observers (admin metrics, the supervisor's start gate, --once) are told
// each sink's status after an apply; nothing feeds back into the source.
package bridge

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"golang.org/x/sync/errgroup"

	"github.com/sds-bridge/sds-bridge/admin"
	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/internal/config"
	"github.com/sds-bridge/sds-bridge/jwtfiles"
	"github.com/sds-bridge/sds-bridge/reload"
	"github.com/sds-bridge/sds-bridge/rotation"
	"github.com/sds-bridge/sds-bridge/sds"
	"github.com/sds-bridge/sds-bridge/supervise"
)

// Options are what New needs besides the config.
type Options struct {
	// Config must be defaulted and validated (config.Load, or the flags'
	// equivalent).
	Config *config.Config
	Logger *slog.Logger
	// Once writes every credential folder once, runs its reload actions
	// and returns (--once); the config then serves no SDS and no admin.
	Once bool
	// Build is shown by the admin endpoints.
	Build admin.BuildInfo
	// Beside run next to the bridge until it stops, e.g. the development
	// Workload API of `dev`. New takes the locks before they start.
	Beside []func(ctx context.Context) error
	// BeforeRun, if set, runs first in Run, before anything else starts
	// (dev's Workload API listens there before the bridge calls it).
	BeforeRun func() error
}

// Bridge is the built graph, ready to Run once. Everything that can fail
// on bad input has been built (and every folder prepared) by New.
type Bridge struct {
	cfg    *config.Config
	log    *slog.Logger
	once   bool
	beside []func(ctx context.Context) error
	// beforeRun is Options.BeforeRun.
	beforeRun func() error

	src     *rotation.Source
	sds     *sds.Server // nil when SDS is off
	folders []*filesink.Folder
	runners []*reload.Runner // one per folder, shared with its JWT files
	jwt     *jwtfiles.Writer
	admin   *admin.Server
	adminLn net.Listener // nil when admin is off
	sup     *supervise.Supervisor
	hups    <-chan os.Signal
	// observers are told each sink's status after an apply. The source
	// calls notify, and is built before its observers (admin reads the
	// source): they are added before Run starts the source, so no lock.
	observers []func(rotation.SinkStatus)
	applied   chan struct{} // a sink has applied, or failed to (--once)

	// release undoes New: locks, signal handlers, the admin listener.
	release []func()

	// folderLocks are the folders' locks, in config order (see lockAll).
	folderLocks []*filesink.FolderLock
}

// New takes what the bridge owns (lockAll), then builds the graph: SDS
// server, prepared folders with their reload runners, JWT writer,
// rotation source, supervisor and admin listener. On error everything
// taken is given back.
func New(ctx context.Context, o Options) (_ *Bridge, err error) {
	b := &Bridge{cfg: o.Config, log: o.Logger, once: o.Once, beside: o.Beside, beforeRun: o.BeforeRun, applied: make(chan struct{}, 1)}
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	unlock, folders, err := lockAll(o.Config, o.Logger)
	if err != nil {
		return nil, err
	}
	b.release = append(b.release, unlock)
	b.folderLocks = folders
	// SIGHUP means what operators expect of a daemon: reload, not die
	// (the default would end the bridge with status 129 and leave its
	// socket behind). It is caught before anything slow, so a HUP during
	// start-up does not end the bridge either.
	hups := make(chan os.Signal, 1)
	signal.Notify(hups, syscall.SIGHUP)
	b.hups = hups
	b.release = append(b.release, func() { signal.Stop(hups) })
	if err := b.build(ctx, o.Build); err != nil {
		return nil, err
	}
	return b, nil
}

// build makes every part: the supervisor, the sinks, the source that feeds
// them, then what observes the source.
func (b *Bridge) build(ctx context.Context, build admin.BuildInfo) error {
	if err := b.buildSupervisor(); err != nil {
		return err
	}
	sinks, err := b.buildSinks(ctx)
	if err != nil {
		return err
	}
	if b.jwt, err = newJWTWriter(b.cfg, b.runners, b.log); err != nil {
		return err
	}
	rc := b.cfg.WorkloadAPI
	rc.Sinks, rc.OnSinkDone, rc.Logger = sinks, b.notify, b.log.With("component", "rotation")
	if b.src, err = rotation.New(rc); err != nil {
		return err
	}
	if b.once {
		b.observers = append(b.observers, b.signalApplied)
	} else {
		mem := &memoryReturner{delay: memoryReturnDelay, free: debug.FreeOSMemory}
		b.observers = append(b.observers, mem.observe)
		b.release = append(b.release, mem.stop)
	}
	b.gateSupervisor(len(sinks))
	return b.buildAdmin(build)
}

// adminAddr is the address the admin listener bound (a port 0 resolved);
// "" when admin is off.
func (b *Bridge) adminAddr() string {
	if b.adminLn == nil {
		return ""
	}
	return b.adminLn.Addr().String()
}

// Run serves until ctx ends, the supervised program exits (with its
// status) or, with Once, every folder is written. It gives back what New
// took; a Bridge runs once.
func (b *Bridge) Run(ctx context.Context) error {
	defer b.close()
	if b.beforeRun != nil {
		if err := b.beforeRun(); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, ctx := errgroup.WithContext(ctx)
	for _, run := range b.beside {
		g.Go(func() error { return run(ctx) })
	}
	g.Go(func() error {
		err := b.serve(ctx)
		// What runs beside has served its purpose (--once, or the
		// supervised program exited).
		cancel()
		return err
	})
	return g.Wait()
}

// serve runs the graph: once, or as a daemon.
func (b *Bridge) serve(ctx context.Context) error {
	if b.once {
		return b.runOnce(ctx)
	}
	logDescriptorBudget(b.cfg, b.log)
	// The child's exit ends the bridge, with the child's status.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var childErr error
	g, ctx := errgroup.WithContext(ctx)
	if b.sup != nil {
		g.Go(func() error {
			childErr = b.sup.Run(ctx)
			cancel()
			return nil
		})
	}
	b.startServers(ctx, g)
	g.Go(func() error { return b.src.Run(ctx) })
	g.Go(func() error { return onHangup(ctx, b.hups, b.src, b.folders, b.log) })
	// JWT-SVIDs have their own Workload API calls and timers: they are not
	// in the X.509 updates the source fans out.
	if !b.jwt.Empty() {
		g.Go(func() error { return b.jwt.Run(ctx) })
	}
	for _, f := range b.cfg.Files {
		b.log.Info("writing credential folder", "dir", f.Dir, "layout", f.WithDefaults().Layout)
	}
	err := g.Wait()
	if err == nil || errors.Is(err, context.Canceled) {
		b.log.Info("stopped; credential folders keep the last good material")
		return ownerHint(b.cfg, os.Geteuid(), childErr)
	}
	return err
}

// startServers starts the SDS and admin servers, if on.
func (b *Bridge) startServers(ctx context.Context, g *errgroup.Group) {
	if b.sds != nil {
		g.Go(func() error { return b.sds.Serve(ctx) })
		b.log.Info("serving Envoy SDS", "socket", b.cfg.SDS.SocketPath)
	}
	if b.adminLn != nil {
		g.Go(func() error { return b.admin.Serve(ctx, b.adminLn) })
		ac := b.cfg.Admin.ServerConfig().WithDefaults()
		b.log.Info("admin endpoint: listening", "addr", b.adminAddr(), "endpoints", ac.LivenessPath+" "+ac.ReadinessPath+" /metrics /status")
	}
}

// close gives back what New took, last taken first.
func (b *Bridge) close() {
	for i := len(b.release) - 1; i >= 0; i-- {
		b.release[i]()
	}
	b.release = nil
}

// signalApplied wakes runOnce after any sink's apply; it never blocks.
func (b *Bridge) signalApplied(rotation.SinkStatus) {
	select {
	case b.applied <- struct{}{}:
	default:
	}
}

// notify tells every observer a sink's status.
func (b *Bridge) notify(st rotation.SinkStatus) {
	for _, fn := range b.observers {
		fn(st)
	}
}
