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
// sun_path is 104 bytes on the BSDs and macOS, 108 on Linux, NUL included.
// Longer paths must be bound elsewhere (or the bind fails).
const MaxSocketPath = 103

// RemoveStaleSocket takes a socket path over from a previous run: it
// removes the socket file at path if nothing listens on it.
// A missing path is fine. A non-socket, a live socket (perhaps another
// bridge: taking its path over would cut its clients off) or a socket whose
// state cannot be told is an error, and the file is left alone.
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
