// Package flock makes a credential folder or an SDS socket belong to one
// running bridge: an exclusive flock(2) on a lock file, taken before
// anything else is touched. The kernel drops the lock when the process
// dies, so a crash never leaves a folder locked.
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
	f    *os.File
	path string
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

// Acquire takes the lock file name inside dir (created with mode 0600 if
// missing) without blocking and records this process's pid in it. The file
// is opened relative to dir and never through a symlink: whoever can write
// dir cannot make the bridge write its pid into another file. A name that
// is not a plain regular file (a symlink, a FIFO, a hard link to something
// else) is refused and left as it is. The lock file is never removed:
// removing it would let two processes each lock a different inode.
func Acquire(dir, name string) (*Lock, error) {
	path := filepath.Join(dir, name)
	if name != filepath.Base(name) || name == "." || name == ".." {
		return nil, fmt.Errorf("lock %s: name must be a plain file name", path)
	}
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("lock %s: open directory: %w", path, err)
	}
	defer unix.Close(dfd)
	fd, err := unix.Openat(dfd, name, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o600)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("lock %s: is a symlink; refusing to follow it", path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 1 {
		f.Close()
		return nil, fmt.Errorf("lock %s: not a plain regular file (mode %#o, %d links); refusing to use it", path, st.Mode, st.Nlink)
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, &HeldError{Path: path, PID: readPID(f)}
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return &Lock{f: f, path: path}, nil
}

// readPID reads the holder's pid; a holder that has not written it yet
// (it is between flock and write) reads as 0.
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

// Release gives the lock up. The file stays (see Acquire).
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
