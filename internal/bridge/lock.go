package bridge

import (
	"fmt"
	"slices"

	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/internal/config"
	"github.com/sds-bridge/sds-bridge/internal/flock"
	"github.com/sds-bridge/sds-bridge/sds"
)

// Lock makes the SDS socket and every credential folder belong to this
// process: one exclusive lock each, taken before any start-up cleanup,
// write or socket removal. A second bridge on any of them (the same folder
// with another socket or SVID, the same socket with another folder) fails
// here, naming the running bridge's pid, and has touched nothing but the
// lock files (and a missing folder, created empty to hold its lock). The
// socket goes first: a bridge refused on the socket creates no folder.
// release gives every lock up; call it once serving has ended.
func Lock(cfg *config.Config) (release func(), err error) {
	var locks []*flock.Lock
	releaseAll := func() {
		for _, l := range slices.Backward(locks) {
			l.Release()
		}
	}
	defer func() {
		if err != nil {
			releaseAll()
		}
	}()
	if cfg.SDS.On() {
		l, err := sds.LockSocket(cfg.SDS.Socket)
		if err != nil {
			return nil, fmt.Errorf("sds.socket %q: %w", cfg.SDS.Socket, err)
		}
		locks = append(locks, l)
	}
	for i, f := range cfg.Files {
		l, err := filesink.LockFolder(f.Dir)
		if err != nil {
			return nil, fmt.Errorf("files[%d].dir %q: %w", i, f.Dir, err)
		}
		locks = append(locks, l)
	}
	return releaseAll, nil
}
