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
// prepared: a previous pod's leftovers are gone before any consumer can
// be told the folder is ready.
func (b *Bridge) buildSinks(ctx context.Context) ([]rotation.Sink, error) {
	var sinks []rotation.Sink
	if b.Config.SDS.On() {
		sc := b.Config.SDS.Config
		sc.Logger = b.Logger.With("component", "sds")
		srv, err := sds.New(sc)
		if err != nil {
			return nil, err
		}
		b.sds = srv
		sinks = append(sinks, srv)
	}
	for i, f := range b.Config.Files {
		folder, runner, err := newFolder(ctx, f, b.folderLocks[i], b.Logger, b.Once)
		if err != nil {
			return nil, fmt.Errorf("files[%d]: %w", i, err)
		}
		sinks = append(sinks, folder)
		b.folders = append(b.folders, folder)
		b.runners = append(b.runners, runner)
	}
	return sinks, nil
}

// newFolder is one prepared folder writing the directory lock holds, and
// its reload runner (shared with its JWT files). A clean-up the disk does
// not let finish does not stop the bridge: SDS must serve all the same,
// and the first Apply retries it.
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

// newJWTWriter writes every folder's JWT files with the folder's runner.
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

// buildAdmin makes the admin server and binds its listener, if on.
func (b *Bridge) buildAdmin() error {
	addr := b.Config.Admin.Address()
	if addr == "" {
		return nil
	}
	ac := b.Config.Admin.ServerConfig()
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
	ac.Build = b.Build
	ac.Logger = b.Logger.With("component", "admin")
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
