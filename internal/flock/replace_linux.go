package flock

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// replace puts a new, locked lock file at the name in one step and
// removes what was there. An exchange, not a rename over it, so that a
// lock another bridge put there meanwhile gets its name back.
func (d lockDir) replace() (_ *Lock, err error) {
	var foreign unix.Stat_t
	if err := unix.Fstatat(d.fd, d.name, &foreign, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, errChanged
		}
		return nil, fmt.Errorf("lock %s: %w", d.path, err)
	}
	if ownLockFile(&foreign) {
		// Another taker's lock file, put there since the caller looked.
		return nil, errChanged
	}
	what := describe(&foreign)
	tmp := d.name + ".new-" + strconv.Itoa(os.Getpid()) + "-" + rand.Text()[:8]
	fd, err := unix.Openat(d.fd, tmp, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %s is there, and no lock file can be made to replace it: %w", d.path, what, err)
	}
	f := os.NewFile(uintptr(fd), d.path)
	defer func() {
		if err != nil {
			if d.holds(tmp, fd) {
				_ = unix.Unlinkat(d.fd, tmp, 0)
			}
			f.Close()
		}
	}()
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return nil, errChanged // someone opened our new file already
	}
	if err := unix.Renameat2(d.fd, tmp, d.fd, d.name, unix.RENAME_EXCHANGE); err != nil {
		return nil, fmt.Errorf("lock %s: %s is there and cannot be replaced (%w); remove it", d.path, what, err)
	}
	var displaced unix.Stat_t
	if err := unix.Fstatat(d.fd, tmp, &displaced, unix.AT_SYMLINK_NOFOLLOW); err != nil || displaced.Dev != foreign.Dev || displaced.Ino != foreign.Ino {
		// Not what was judged: give it its name back.
		_ = unix.Renameat2(d.fd, tmp, d.fd, d.name, unix.RENAME_EXCHANGE)
		return nil, errChanged
	}
	// The lock is ours now; what cannot be removed is only untidy.
	if err := d.root.RemoveAll(tmp); err != nil {
		what += fmt.Sprintf(", moved to %s (not removed: %v)", tmp, err)
	}
	recordPID(f)
	return &Lock{f: f, path: d.path, replaced: what}, nil
}

func describe(st *unix.Stat_t) string {
	kind := "a special file"
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		kind = "a file"
		if st.Nlink != 1 {
			kind = fmt.Sprintf("a file with %d links", st.Nlink)
		}
	case unix.S_IFLNK:
		kind = "a symlink"
	case unix.S_IFDIR:
		kind = "a directory"
	}
	return fmt.Sprintf("%s owned by uid %d (mode %04o)", kind, st.Uid, st.Mode&0o7777)
}
