package filesink

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// folderChangeMask is every change that can make a folder ready: a swap,
// or files another tool writes, renames, chmods or removes.
const folderChangeMask = unix.IN_CREATE | unix.IN_MOVED_TO | unix.IN_MOVED_FROM | unix.IN_CLOSE_WRITE |
	unix.IN_ATTRIB | unix.IN_DELETE | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF

// folderWatch tells Wait that a folder changed (inotify). The parent is
// watched too, so the folder is added as soon as it appears.
type folderWatch struct {
	dir     string
	f       *os.File
	changes chan struct{}
	done    chan struct{}
}

// watchFolderChanges signals changes, coalesced, until stop.
func watchFolderChanges(dir string) (changes <-chan struct{}, stop func(), err error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, nil, fmt.Errorf("inotify: %w", err)
	}
	if _, err := unix.InotifyAddWatch(fd, filepath.Dir(dir), unix.IN_CREATE|unix.IN_MOVED_TO|unix.IN_ONLYDIR); err != nil {
		unix.Close(fd)
		return nil, nil, fmt.Errorf("inotify: watch %s: %w", filepath.Dir(dir), err)
	}
	// A non-blocking descriptor in an *os.File waits in Go's poller, and
	// Close wakes the reader.
	w := &folderWatch{dir: dir, f: os.NewFile(uintptr(fd), "inotify"), changes: make(chan struct{}, 1), done: make(chan struct{})}
	w.addFolder()
	go w.run()
	return w.changes, func() {
		w.f.Close()
		<-w.done
	}, nil
}

// addFolder watches the folder once it exists; adding it twice is harmless.
func (w *folderWatch) addFolder() {
	rc, err := w.f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_, _ = unix.InotifyAddWatch(int(fd), w.dir, folderChangeMask|unix.IN_ONLYDIR)
	})
}

func (w *folderWatch) run() {
	defer close(w.done)
	buf := make([]byte, 16<<10)
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				// Without events Wait still looks on every tick.
				close(w.changes)
			}
			return
		}
		if n > 0 {
			w.addFolder()
			select {
			case w.changes <- struct{}{}:
			default:
			}
		}
	}
}
