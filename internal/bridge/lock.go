package bridge

import (
	"fmt"
	"log/slog"
	"slices"

	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/internal/config"
	"github.com/sds-bridge/sds-bridge/sds"
)

// lockAll makes the SDS socket and every credential folder belong to this
// process: one exclusive lock each, taken before any start-up cleanup,
// write or socket removal. A second bridge on any of them (the same folder
// with another socket or SVID, the same socket with another folder) fails
// here, naming the running bridge's pid, and has touched nothing but the
// lock files (and a missing folder, created empty to hold its lock). The
// socket goes first: a bridge refused on the socket creates no folder.
// folders holds each folder's lock, in config order: the folder writes the
// directory locked here. A lock file some other uid planted is replaced,
// and logged. release gives every lock up; call it once serving has ended.
func lockAll(cfg *config.Config, log *slog.Logger) (release func(), folders []*filesink.FolderLock, err error) {
	var releases []func()
	releaseAll := func() {
		for _, r := range slices.Backward(releases) {
			r()
		}
	}
	defer func() {
		if err != nil {
			releaseAll()
		}
	}()
	if cfg.SDS.On() {
		l, err := sds.LockSocket(cfg.SDS.SocketPath)
		if err != nil {
			return nil, nil, fmt.Errorf("sds.socket %q: %w", cfg.SDS.SocketPath, err)
		}
		releases = append(releases, func() { l.Release() })
		warnReplaced(log, l.Path(), l.Replaced())
	}
	for i, f := range cfg.Files {
		if err := filesink.RefuseWorldWritable(f.Dir, f.AllowWorldWritableDir); err != nil {
			return nil, nil, fmt.Errorf("files[%d].dir: %w", i, err)
		}
		l, err := filesink.LockFolder(f.Dir)
		if err != nil {
			return nil, nil, fmt.Errorf("files[%d].dir %q: %w", i, f.Dir, err)
		}
		releases = append(releases, l.Release)
		folders = append(folders, l)
		warnReplaced(log, l.Path(), l.Replaced())
	}
	return releaseAll, folders, nil
}

// warnReplaced logs a lock file's name that held something other than a
// lock file of this uid: another uid that can write the directory planted
// it, perhaps to keep the bridge from starting.
func warnReplaced(log *slog.Logger, path, what string) {
	if what != "" {
		log.Warn("replaced what was at a lock file's name: it was not a lock file this uid made (another user that can write the directory put it there)",
			"lock", path, "was", what)
	}
}
