package sds

import (
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/sds-bridge/sds-bridge/internal/connlimit"
)

// What an outsider can hold on the SDS socket. Every accepted connection is
// a descriptor of the bridge's; a peer that could open them without bound
// (a refused uid needs only write access to the socket) would exhaust the
// descriptor limit, and every folder swap would then fail with "too many
// open files" until the certificate on disk expires.

// DefaultMaxConnections is Config.MaxConnections when zero: far more than
// the Envoys of one pod open, far fewer than the descriptor limit.
const DefaultMaxConnections = 128

// DefaultRefusedPeerGrace is Config.RefusedPeerGrace when zero.
const DefaultRefusedPeerGrace = 5 * time.Second

// overCapLogEvery rate-limits the log line about connections closed over
// the cap: an attacker must not be able to flood the log either.
const overCapLogEvery = 10 * time.Second

// refusedShare is the part of MaxConnections that refused peers may hold
// together, so that they never crowd out the allowed ones.
func refusedShare(maxConns int) int { return max(1, maxConns/8) }

// limitListener is the socket's connlimit.Listener: at most max
// connections at a time, of which at most maxRefused from peers the policy
// refuses. A refused peer's connection is closed after grace: long enough
// for the PermissionDenied answer to its first RPCs, too short to pile up.
type limitListener struct {
	*connlimit.Listener
	// open and openRefused are the Listener's counts, for Stats.
	open, openRefused *atomic.Int64
	max, maxRefused   int64
	log               *slog.Logger
}

func newLimitListener(l *net.UnixListener, policy accessPolicy, maxConns int, grace time.Duration, overCap *atomic.Int64, log *slog.Logger) *limitListener {
	ll := &limitListener{max: int64(maxConns), maxRefused: int64(refusedShare(maxConns)), log: log}
	ll.Listener = connlimit.New(l, connlimit.Config{
		Max: ll.max, MaxLimited: ll.maxRefused, LimitedLifetime: grace,
		Classify: func(c net.Conn) (any, bool) {
			info := policy.identify(c.(*net.UnixConn)) // a UnixListener's
			return info, !info.Allowed
		},
		OverCap: overCap, Report: ll.logOverCap, ReportEvery: overCapLogEvery,
	})
	ll.open, ll.openRefused = &ll.Listener.Open, &ll.Listener.OpenLimited
	return ll
}

// Accept returns the next connection within the caps, with what the
// kernel said about its peer.
func (l *limitListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	cc := c.(*connlimit.Conn)
	return &peerConn{Conn: cc, info: cc.Tag.(peerInfo)}, nil
}

func (l *limitListener) logOverCap(closed int64, last *connlimit.Conn) {
	info := last.Tag.(peerInfo)
	l.log.Warn("Envoy SDS: connections closed at once: too many open (sds.max_connections; refused peers may hold an eighth of it)",
		append([]any{"closed", closed, "open", l.open.Load(), "open_refused", l.openRefused.Load(),
			"max", l.max, "max_refused", l.maxRefused, "last_peer_allowed", info.Allowed}, info.logAttrs()...)...)
}

// peerConn is an accepted connection with what the kernel said about its
// peer; closing it gives its place back.
type peerConn struct {
	*connlimit.Conn
	info peerInfo
}
