// Package flock makes a credential folder or an SDS socket belong to one
// running bridge: an exclusive flock(2) on a lock file, taken before
// anything else is touched. The kernel drops the lock when the process
// dies, so a crash never leaves a folder locked. A socket file a dead
// bridge left behind is taken over (RemoveStaleSocket); a live one is not.
//
// A lock file counts only if this process's uid made it: a regular file
// owned by that uid, with one link and no access for anyone else. Whoever
// else can write the directory could otherwise plant a file there, hold
// its lock and keep every bridge from starting (naming a pid they chose).
// Anything else at the name is not a bridge's lock: it is replaced.
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

// errChanged says the name changed between two steps of taking the lock
// (another process took or replaced it meanwhile): look again.
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

// AcquireIn takes the lock file name inside the directory root is open on
// (created with mode 0600 if missing), without blocking, and records this
// process's pid in it when the disk has room (a full disk must not keep
// the bridge from starting: the lock itself needs no space). The file is
// opened relative to root and never through a symlink: whoever can write
// the directory cannot make the bridge write into another file. Whatever
// is at the name that is not this uid's lock file (a symlink, a FIFO, a
// directory, a hard link, another uid's file, held or not) is swapped out
// atomically for a new lock file and removed (Replaced says what it was).
// The lock file itself is never removed: removing it would let two
// processes each lock a different inode.
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
	// Each pass either ends or saw another process change the name; two
	// passes lost to that are already unusual.
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

// acquire is one attempt: open (or create) our lock file and lock it, or
// replace what is at the name.
func (d lockDir) acquire() (*Lock, error) {
	fd, err := unix.Openat(d.fd, d.name, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o600)
	switch {
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.EISDIR), errors.Is(err, unix.EACCES),
		errors.Is(err, unix.ENXIO), errors.Is(err, unix.EOPNOTSUPP):
		// A symlink, a directory, a socket, or a file this uid may not open:
		// not ours.
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
		// Another process replaced the name meanwhile (see replace) and
		// holds it now.
		f.Close()
		return nil, errChanged
	}
	recordPID(f)
	return &Lock{f: f, path: d.path}, nil
}

// ownLockFile says whether st is a lock file this uid made: no other uid
// could have created it, opened it, or be holding it.
func ownLockFile(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFREG && st.Nlink == 1 &&
		int(st.Uid) == os.Geteuid() && st.Mode&0o077 == 0
}

// holds reports whether name in the directory (not followed if a link) is
// the file fd is open on.
func (d lockDir) holds(name string, fd int) bool {
	var held, there unix.Stat_t
	return unix.Fstat(fd, &held) == nil && unix.Fstatat(d.fd, name, &there, unix.AT_SYMLINK_NOFOLLOW) == nil &&
		held.Dev == there.Dev && held.Ino == there.Ino
}

// recordPID writes this process's pid for a second instance's error. It
// is a courtesy: on a full disk the write fails and the file stays empty
// (truncating first frees the old pid's block, so it seldom does), and the
// lock holds all the same.
func recordPID(f *os.File) {
	if f.Truncate(0) == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
}

// readPID reads the holder's pid; a holder that has not written it yet
// (it is between flock and write), or could not, reads as 0.
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
