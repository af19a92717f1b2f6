// Package bridge builds the whole sds-bridge from a validated config and
// runs it. The data path is one way: Workload API → rotation.Source → each
// sink (sds.Server, filesink.Folder → its reload.Runner); observers (admin
// metrics, the supervisor's start gate, --once) hear each sink's status
// after an apply, and nothing feeds back into the source.
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
	// Config must be defaulted and validated.
	Config *config.Config
	Logger *slog.Logger
	// Once is --once: write every folder once, run its reload actions and
	// return; the config then serves no SDS and no admin.
	Once  bool
	Build admin.BuildInfo
	// Beside run next to the bridge until it stops (dev's Workload API);
	// New takes the locks before they start.
	Beside []func(ctx context.Context) error
	// BeforeRun runs first in Run (dev's Workload API listens there).
	BeforeRun func() error
}

// Bridge is the built graph, ready to Run once: everything that can fail
// on bad input has been built (and every folder prepared) by New.
type Bridge struct {
	Options

	src     *rotation.Source
	sds     *sds.Server // nil when SDS is off
	folders []*filesink.Folder
	runners []*reload.Runner // one per folder, shared with its JWT files
	jwt     *jwtfiles.Writer
	admin   *admin.Server
	adminLn net.Listener // nil when admin is off
	sup     *supervise.Supervisor
	hups    <-chan os.Signal
	// observers hear each sink's status after an apply (notify). All are
	// added before Run starts the source, so no lock.
	observers []func(rotation.SinkStatus)
	applied   chan struct{} // a sink has applied, or failed to (--once)

	// release undoes New, last first: locks, signal handlers, listener.
	release     []func()
	folderLocks []*filesink.FolderLock // in config order
}

// New takes what the bridge owns (lockAll), then builds the graph. On
// error everything taken is given back.
func New(ctx context.Context, o Options) (_ *Bridge, err error) {
	b := &Bridge{Options: o, applied: make(chan struct{}, 1)}
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	if err := b.lockAll(); err != nil {
		return nil, err
	}
	// SIGHUP reloads rather than kills (status 129, the socket left
	// behind); caught before anything slow, so start-up survives one too.
	hups := make(chan os.Signal, 1)
	signal.Notify(hups, syscall.SIGHUP)
	b.hups = hups
	b.release = append(b.release, func() { signal.Stop(hups) })
	if err := b.build(ctx); err != nil {
		return nil, err
	}
	return b, nil
}

func (b *Bridge) build(ctx context.Context) error {
	if err := b.buildSupervisor(); err != nil {
		return err
	}
	sinks, err := b.buildSinks(ctx)
	if err != nil {
		return err
	}
	if b.jwt, err = newJWTWriter(b.Config, b.runners, b.Logger); err != nil {
		return err
	}
	rc := b.Config.WorkloadAPI
	rc.Sinks, rc.OnSinkDone, rc.Logger = sinks, b.notify, b.Logger.With("component", "rotation")
	if b.src, err = rotation.New(rc); err != nil {
		return err
	}
	if b.Once {
		b.observers = append(b.observers, b.signalApplied)
	} else {
		mem := &memoryReturner{delay: memoryReturnDelay, free: debug.FreeOSMemory}
		b.observers = append(b.observers, mem.observe)
		b.release = append(b.release, mem.stop)
	}
	b.gateSupervisor(len(sinks))
	return b.buildAdmin()
}

// adminAddr is the address the admin listener bound; "" when admin is off.
func (b *Bridge) adminAddr() string {
	if b.adminLn == nil {
		return ""
	}
	return b.adminLn.Addr().String()
}

// Run serves until ctx ends, the supervised program exits (with its
// status) or, with Once, every folder is written.
func (b *Bridge) Run(ctx context.Context) error {
	defer b.close()
	if b.BeforeRun != nil {
		if err := b.BeforeRun(); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, ctx := errgroup.WithContext(ctx)
	for _, run := range b.Beside {
		g.Go(func() error { return run(ctx) })
	}
	g.Go(func() error {
		err := b.serve(ctx)
		cancel() // what runs beside has served its purpose
		return err
	})
	return g.Wait()
}

func (b *Bridge) serve(ctx context.Context) error {
	if b.Once {
		return b.runOnce(ctx)
	}
	logDescriptorBudget(b.Config, b.Logger)
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
	g.Go(func() error { return onHangup(ctx, b.hups, b.src, b.folders, b.Logger) })
	// JWT-SVIDs have their own Workload API calls, outside the source.
	if !b.jwt.Empty() {
		g.Go(func() error { return b.jwt.Run(ctx) })
	}
	for _, f := range b.Config.Files {
		b.Logger.Info("writing credential folder", "dir", f.Dir, "layout", f.WithDefaults().Layout)
	}
	err := g.Wait()
	if err == nil || errors.Is(err, context.Canceled) {
		b.Logger.Info("stopped; credential folders keep the last good material")
		return ownerHint(b.Config, os.Geteuid(), childErr)
	}
	return err
}

func (b *Bridge) startServers(ctx context.Context, g *errgroup.Group) {
	if b.sds != nil {
		g.Go(func() error { return b.sds.Serve(ctx) })
		b.Logger.Info("serving Envoy SDS", "socket", b.Config.SDS.SocketPath)
	}
	if b.adminLn != nil {
		g.Go(func() error { return b.admin.Serve(ctx, b.adminLn) })
		b.Logger.Info("admin endpoint: listening", "addr", b.adminAddr(), "endpoints", b.admin.Paths())
	}
}

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

func (b *Bridge) notify(st rotation.SinkStatus) {
	for _, fn := range b.observers {
		fn(st)
	}
}
