package flock

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"syscall"
	"time"
)

// MaxSocketPath is the longest unix socket path every supported OS binds:
// sun_path is 104 bytes on the BSDs and macOS, NUL included.
const MaxSocketPath = 103

// RemoveStaleSocket removes the socket file at path if nothing listens on
// it. A non-socket, a live socket (perhaps another bridge's) or one whose
// state cannot be told is an error, and left alone.
func RemoveStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stat socket path %q: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("socket path %q exists and is not a socket (mode %s); refusing to remove it", path, fi.Mode())
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	switch {
	case err == nil:
		conn.Close()
		return fmt.Errorf("socket %q is in use by another process", path)
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, fs.ErrNotExist):
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove stale socket %q: %w", path, err)
		}
		return nil
	default:
		return fmt.Errorf("cannot tell whether socket %q is stale: %w", path, err)
	}
}
