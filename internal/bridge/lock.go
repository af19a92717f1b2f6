package bridge

import (
	"fmt"
	"log/slog"

	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/sds"
)

// lockAll makes the SDS socket and every folder belong to this process:
// one exclusive lock each, before any clean-up, write or socket removal,
// so a second bridge on any of them fails here, having touched only lock
// files (and a missing folder, created to hold its lock). The socket goes
// first: a bridge refused on it creates no folder. The folder locks are
// kept in config order; each folder writes the directory locked here.
// b.close gives every lock back.
func (b *Bridge) lockAll() error {
	cfg, log := b.Config, b.Logger
	if cfg.SDS.On() {
		l, err := sds.LockSocket(cfg.SDS.SocketPath)
		if err != nil {
			return fmt.Errorf("sds.socket %q: %w", cfg.SDS.SocketPath, err)
		}
		b.release = append(b.release, func() { l.Release() })
		warnReplaced(log, l.Path(), l.Replaced())
	}
	for i, f := range cfg.Files {
		if err := filesink.RefuseWorldWritable(f.Dir, f.AllowWorldWritableDir); err != nil {
			return fmt.Errorf("files[%d].dir: %w", i, err)
		}
		l, err := filesink.LockFolder(f.Dir)
		if err != nil {
			return fmt.Errorf("files[%d].dir %q: %w", i, f.Dir, err)
		}
		b.release = append(b.release, l.Release)
		b.folderLocks = append(b.folderLocks, l)
		warnReplaced(log, l.Path(), l.Replaced())
	}
	return nil
}

// warnReplaced logs a lock file's name that held something else: another
// uid that can write the directory planted it.
func warnReplaced(log *slog.Logger, path, what string) {
	if what != "" {
		log.Warn("replaced what was at a lock file's name: it was not a lock file this uid made (another user that can write the directory put it there)",
			"lock", path, "was", what)
	}
}
