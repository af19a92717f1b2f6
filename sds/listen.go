package sds

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/sds-bridge/sds-bridge/internal/connlimit"
	"github.com/sds-bridge/sds-bridge/internal/flock"
)

// DefaultMaxConnections is far more than the Envoys of one pod open, far
// fewer than the descriptor limit, which folder swaps need too: a refused
// uid needs only write access to the socket to open connections.
const DefaultMaxConnections = 128

// DefaultRefusedPeerGrace is Config.RefusedPeerGrace when zero.
const DefaultRefusedPeerGrace = 5 * time.Second

// overCapLogEvery rate-limits the log line about connections over the cap.
const overCapLogEvery = 10 * time.Second

// refusedShare is the part of MaxConnections refused peers may hold
// together, so that they never crowd out the allowed ones.
func refusedShare(maxConns int) int { return max(1, maxConns/8) }

// limitListener caps l at MaxConnections, refusedShare of them refused
// peers', each closed after RefusedPeerGrace: long enough for the
// PermissionDenied answers, too short to pile up. A connection's Tag is
// its peerInfo, which peerCreds hands to gRPC.
func (s *Server) limitListener(l *net.UnixListener) *connlimit.Listener {
	maxConns, maxRefused := int64(s.cfg.MaxConnections), int64(refusedShare(s.cfg.MaxConnections))
	var cl *connlimit.Listener
	cl = connlimit.New(l, connlimit.Config{
		Max: maxConns, MaxLimited: maxRefused, LimitedLifetime: s.cfg.RefusedPeerGrace,
		Classify: func(c net.Conn) (any, bool) {
			info := s.policy.identify(c.(*net.UnixConn)) // a UnixListener's
			return info, !info.Allowed
		},
		OverCap: &s.overCap, ReportEvery: overCapLogEvery,
		Report: func(closed int64, last *connlimit.Conn) {
			info := last.Tag.(peerInfo)
			s.cfg.Logger.Warn("Envoy SDS: connections closed at once: too many open (sds.max_connections; refused peers may hold an eighth of it)",
				append([]any{"closed", closed, "open", cl.Open.Load(), "open_refused", cl.OpenLimited.Load(),
					"max", maxConns, "max_refused", maxRefused, "last_peer_allowed", info.Allowed}, info.logAttrs()...)...)
		},
	})
	return cl
}

// LockSocket makes the socket path this process's until Release: a lock
// on "<socket>.lock", its directory created (0755) if missing. Take it
// before touching anything, so a second bridge stops there; the error
// names the running bridge's pid.
func LockSocket(path string) (*SocketLock, error) {
	dir := filepath.Dir(path)
	if err := mkdirAll(dir); err != nil {
		return nil, fmt.Errorf("create socket directory %q: %w", dir, err)
	}
	l, err := flock.Acquire(dir, filepath.Base(path)+".lock")
	if err != nil {
		return nil, err
	}
	return &SocketLock{l: l}, nil
}

// SocketLock is a socket path held by this process (LockSocket).
type SocketLock struct{ l *flock.Lock }

// Path is the lock file's path.
func (l *SocketLock) Path() string { return l.l.Path() }

// Replaced describes what another uid had planted at the lock file's name.
func (l *SocketLock) Replaced() string { return l.l.Replaced() }

// Release gives the socket path up.
func (l *SocketLock) Release() error { return l.l.Release() }

// listenUnix listens on path with mode, creating the directory (0755) and
// removing a stale socket, but nothing else. remove deletes the socket if
// it is still this one.
func listenUnix(path string, mode os.FileMode) (l *net.UnixListener, remove func(), err error) {
	dir := filepath.Dir(path)
	if err := mkdirAll(dir); err != nil {
		return nil, nil, fmt.Errorf("create socket directory %q: %w", dir, err)
	}
	if err := flock.RemoveStaleSocket(path); err != nil {
		return nil, nil, fmt.Errorf("%w", err)
	}

	// Bind in a private (0700) directory, set the mode, then rename into
	// place: no client can connect while the socket still has the mode the
	// umask gave it.
	tmpDir, err := os.MkdirTemp(dir, ".sds")
	if err != nil {
		return nil, nil, fmt.Errorf("create private directory in %q: %w", dir, err)
	}
	defer os.RemoveAll(tmpDir)
	bindPath := filepath.Join(tmpDir, "s")
	if len(bindPath) > flock.MaxSocketPath {
		// Too long for sun_path: bind in place, guarded by the directory.
		bindPath = path
	}

	l, err = net.ListenUnix("unix", &net.UnixAddr{Name: bindPath, Net: "unix"})
	if err != nil {
		return nil, nil, fmt.Errorf("listen on %q: %w", path, err)
	}
	l.SetUnlinkOnClose(false) // the socket moves
	defer func() {
		if err != nil {
			l.Close()
			os.Remove(bindPath)
		}
	}()
	if err := os.Chmod(bindPath, mode); err != nil {
		return nil, nil, fmt.Errorf("chmod socket %q to %04o: %w", path, mode, err)
	}
	if bindPath != path {
		if err := os.Rename(bindPath, path); err != nil {
			return nil, nil, fmt.Errorf("move socket into place at %q: %w", path, err)
		}
	}
	created, err := os.Lstat(path)
	if err != nil {
		return nil, nil, fmt.Errorf("stat socket %q: %w", path, err)
	}
	remove = func() {
		// A successor may already have replaced the socket; leave that one.
		if cur, err := os.Lstat(path); err == nil && os.SameFile(created, cur) {
			os.Remove(path)
		}
	}
	return l, remove, nil
}

// mkdirAll creates dir and missing parents with mode 0755 whatever the
// umask: Envoy often runs as another user and must reach the socket.
func mkdirAll(dir string) error {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, d := range missing {
		if err := os.Chmod(d, 0o755); err != nil {
			return err
		}
	}
	return nil
}
