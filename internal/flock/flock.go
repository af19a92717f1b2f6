// Package flock makes a credential folder or an SDS socket belong to one
// running bridge: an exclusive flock(2) on a lock file, which the kernel
// drops when the process dies.
//
// A lock file counts only if this process's uid made it (a regular file of
// that uid, one link, no access for others): whoever else can write the
// directory could otherwise plant and hold one to keep every bridge out.
// Anything else at the name is replaced.
package flock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Lock is a held lock; Release (or the process ending) gives it up.
type Lock struct {
	f        *os.File
	path     string
	replaced string
}

// HeldError says that another process holds the lock, and which one.
type HeldError struct {
	Path string
	// PID is the holder's process id as it recorded it; 0 if unknown.
	PID int
}

func (e *HeldError) Error() string {
	if e.PID > 0 {
		return fmt.Sprintf("%s is held by another sds-bridge (pid %d)", e.Path, e.PID)
	}
	return fmt.Sprintf("%s is held by another sds-bridge (pid unknown)", e.Path)
}

// errChanged: another process took or replaced the name meanwhile.
var errChanged = errors.New("the lock file changed while it was being taken")

// Acquire takes the lock file name inside dir; see AcquireIn.
func Acquire(dir, name string) (*Lock, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("lock %s: open directory: %w", filepath.Join(dir, name), err)
	}
	defer root.Close()
	return AcquireIn(root, name)
}

// AcquireIn takes the lock file name in root's directory (mode 0600),
// without blocking, never through a symlink, and records this process's
// pid in it. Whatever else is at the name is swapped out atomically and
// removed (see Replaced). The lock file itself is never removed: two
// processes could then each lock a different inode.
func AcquireIn(root *os.Root, name string) (*Lock, error) {
	path := filepath.Join(root.Name(), name)
	if name != filepath.Base(name) || name == "." || name == ".." {
		return nil, fmt.Errorf("lock %s: name must be a plain file name", path)
	}
	dir, err := root.Open(".")
	if err != nil {
		return nil, fmt.Errorf("lock %s: open directory: %w", path, err)
	}
	defer dir.Close()
	d := lockDir{root: root, fd: int(dir.Fd()), name: name, path: path}
	// A pass ends unless another process changed the name meanwhile.
	for range 3 {
		l, err := d.acquire()
		if !errors.Is(err, errChanged) {
			return l, err
		}
	}
	return nil, fmt.Errorf("lock %s: it kept changing while being taken; is another process replacing it?", path)
}

// lockDir is the directory of one lock file, open.
type lockDir struct {
	root       *os.Root
	fd         int
	name, path string
}

func (d lockDir) acquire() (*Lock, error) {
	fd, err := unix.Openat(d.fd, d.name, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o600)
	switch {
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.EISDIR), errors.Is(err, unix.EACCES),
		errors.Is(err, unix.ENXIO), errors.Is(err, unix.EOPNOTSUPP):
		// A symlink, a directory, a socket, or a file this uid may not open.
		return d.replace()
	case err != nil:
		return nil, fmt.Errorf("lock %s: %w", d.path, err)
	}
	f := os.NewFile(uintptr(fd), d.path)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", d.path, err)
	}
	if !ownLockFile(&st) {
		f.Close()
		return d.replace()
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, &HeldError{Path: d.path, PID: readPID(f)}
		}
		return nil, fmt.Errorf("lock %s: %w", d.path, err)
	}
	if !d.holds(d.name, fd) {
		// Another process replaced the name meanwhile (see replace).
		f.Close()
		return nil, errChanged
	}
	recordPID(f)
	return &Lock{f: f, path: d.path}, nil
}

// ownLockFile: no other uid could have made, opened or be holding st.
func ownLockFile(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFREG && st.Nlink == 1 &&
		int(st.Uid) == os.Geteuid() && st.Mode&0o077 == 0
}

// holds reports whether name (not followed) is the file fd is open on.
func (d lockDir) holds(name string, fd int) bool {
	var held, there unix.Stat_t
	return unix.Fstat(fd, &held) == nil && unix.Fstatat(d.fd, name, &there, unix.AT_SYMLINK_NOFOLLOW) == nil &&
		held.Dev == there.Dev && held.Ino == there.Ino
}

// recordPID writes this process's pid for a second instance's error, as a
// courtesy: on a full disk the file stays empty and the lock holds.
func recordPID(f *os.File) {
	if f.Truncate(0) == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
}

// readPID reads the holder's pid; 0 if it has not written it (yet).
func readPID(f *os.File) int {
	buf := make([]byte, 32)
	n, _ := f.ReadAt(buf, 0)
	pid, err := strconv.Atoi(strings.TrimSpace(string(buf[:n])))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// Path is the lock file's path.
func (l *Lock) Path() string { return l.path }

// Replaced describes what was at the lock file's name and was not a
// bridge's lock ("" if nothing was replaced), for the log.
func (l *Lock) Replaced() string { return l.replaced }

// Release gives the lock up. The file stays (see AcquireIn).
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
