package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"golang.org/x/sys/unix"

	"github.com/sds-bridge/sds-bridge/admin"
	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/internal/config"
	"github.com/sds-bridge/sds-bridge/jwtfiles"
	"github.com/sds-bridge/sds-bridge/reload"
	"github.com/sds-bridge/sds-bridge/rotation"
	"github.com/sds-bridge/sds-bridge/sds"
)

// buildSinks makes the SDS server (if on) and every credential folder,
// each prepared: leftovers from a previous pod are gone before any
// consumer can be told the folder is ready (the incident this project
// comes from).
func (b *Bridge) buildSinks(ctx context.Context) ([]rotation.Sink, error) {
	var sinks []rotation.Sink
	if b.cfg.SDS.On() {
		sc := b.cfg.SDS.Config
		sc.Logger = b.log.With("component", "sds")
		srv, err := sds.New(sc)
		if err != nil {
			return nil, err
		}
		b.sds = srv
		sinks = append(sinks, srv)
	}
	for i, f := range b.cfg.Files {
		folder, runner, err := newFolder(ctx, f, b.folderLocks[i], b.log, b.once)
		if err != nil {
			return nil, fmt.Errorf("files[%d]: %w", i, err)
		}
		sinks = append(sinks, folder)
		b.folders = append(b.folders, folder)
		b.runners = append(b.runners, runner)
	}
	return sinks, nil
}

// newFolder is one prepared credential folder, writing the directory
// locked as lock, and its one reload runner, which the folder's JWT writer
// shares. A clean-up the disk does not let finish (full, read-only) does
// not stop the bridge: SDS must serve all the same, and the folder's first
// Apply runs the clean-up again, retried until it can.
func newFolder(ctx context.Context, f config.Folder, lock *filesink.FolderLock, log *slog.Logger, once bool) (*filesink.Folder, *reload.Runner, error) {
	rc := f.ReloadConfig(once)
	rc.Logger = log.With("component", "reload", "dir", f.Dir)
	runner, err := reload.New(rc)
	if err != nil {
		return nil, nil, err
	}
	fc := f.Config
	fc.Reload = runner
	fc.Lock = lock
	fc.Logger = log.With("component", "files", "dir", f.Dir)
	folder, err := filesink.New(fc)
	if err != nil {
		return nil, nil, err
	}
	switch err := folder.Prepare(ctx); {
	case errors.Is(err, filesink.ErrNotPrepared):
		fc.Logger.Error("the folder's start-up clean-up could not finish; the bridge starts all the same and retries it before the first swap",
			"err", err)
	case err != nil:
		return nil, nil, err
	}
	return folder, runner, nil
}

// newJWTWriter writes every folder's JWT files, sharing each folder's
// reload runner with its X.509 writer.
func newJWTWriter(cfg *config.Config, runners []*reload.Runner, log *slog.Logger) (*jwtfiles.Writer, error) {
	jc := jwtfiles.Config{
		Address:         cfg.WorkloadAPI.Address,
		DefaultSVIDHint: cfg.WorkloadAPI.DefaultSVIDHint,
		Logger:          log.With("component", "jwtfiles"),
	}
	for i, f := range cfg.Files {
		jf := f.JWTFolder()
		jf.Reload = runners[i]
		jc.Folders = append(jc.Folders, jf)
	}
	return jwtfiles.New(jc)
}

// buildAdmin makes the admin server and binds its listener, if on; the
// admin's latency histogram then hears every sink's status.
func (b *Bridge) buildAdmin(build admin.BuildInfo) error {
	addr := b.cfg.Admin.Address()
	if addr == "" {
		return nil
	}
	ac := b.cfg.Admin.ServerConfig()
	ac.Source = b.src
	for _, f := range b.folders {
		ac.Folders = append(ac.Folders, f)
	}
	if b.sds != nil {
		ac.SDS = b.sds
	}
	if !b.jwt.Empty() {
		ac.JWT = b.jwt
	}
	ac.Build = build
	ac.Logger = b.log.With("component", "admin")
	adm, err := admin.New(ac)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, unix.EADDRINUSE) {
			return fmt.Errorf("admin.listen %q: %w: another process has that port; pass --admin 127.0.0.1:0 for any free port, or --admin \"\" for no admin listener", addr, err)
		}
		return fmt.Errorf("admin.listen %q: %w", addr, err)
	}
	b.admin, b.adminLn = adm, ln
	b.release = append(b.release, func() { ln.Close() })
	b.observers = append(b.observers, adm.ObserveSink)
	return nil
}
