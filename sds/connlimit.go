package sds

import (
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
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

// limitListener accepts at most max connections at a time, of which at most
// maxRefused from peers the policy refuses. A connection over either cap is
// closed at once, counted and logged (rate-limited), and Accept goes on
// with the next one: closing, rather than leaving it in the kernel's
// backlog as netutil.LimitListener would, keeps a flood of refused peers
// from queueing ahead of Envoy, and makes the pressure visible. A refused
// peer's connection is closed after grace: long enough for the
// PermissionDenied answer to its first RPCs, too short to pile up.
type limitListener struct {
	*net.UnixListener
	policy          accessPolicy
	max, maxRefused int64
	grace           time.Duration
	log             *slog.Logger

	open, openRefused atomic.Int64
	// overCap counts connections closed because a cap was reached.
	overCap *atomic.Int64

	logMu      sync.Mutex
	lastLog    time.Time
	unreported int64
}

func newLimitListener(l *net.UnixListener, policy accessPolicy, maxConns int, grace time.Duration, overCap *atomic.Int64, log *slog.Logger) *limitListener {
	return &limitListener{
		UnixListener: l, policy: policy, max: int64(maxConns), maxRefused: int64(refusedShare(maxConns)),
		grace: grace, overCap: overCap, log: log,
	}
}

// Accept returns the next connection within the caps. Accept runs on one
// goroutine (grpc's serve loop) and the counts only fall elsewhere, so a
// check followed by an increment never lets one connection too many in.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			return nil, err
		}
		info := l.policy.identify(c)
		if l.open.Load() >= l.max || (!info.Allowed && l.openRefused.Load() >= l.maxRefused) {
			c.Close()
			l.overCap.Add(1)
			l.logOverCap(info)
			continue
		}
		l.open.Add(1)
		pc := &peerConn{UnixConn: c, info: info, l: l}
		if !info.Allowed {
			l.openRefused.Add(1)
			pc.timer = time.AfterFunc(l.grace, func() { pc.Close() })
		}
		return pc, nil
	}
}

func (l *limitListener) logOverCap(info peerInfo) {
	l.logMu.Lock()
	defer l.logMu.Unlock()
	l.unreported++
	now := time.Now()
	if !l.lastLog.IsZero() && now.Sub(l.lastLog) < overCapLogEvery {
		return
	}
	l.log.Warn("sds: connections closed at once: too many open (sds.max_connections; refused peers may hold an eighth of it)",
		append([]any{"closed", l.unreported, "open", l.open.Load(), "open_refused", l.openRefused.Load(),
			"max", l.max, "max_refused", l.maxRefused, "last_peer_allowed", info.Allowed}, info.logAttrs()...)...)
	l.lastLog, l.unreported = now, 0
}

// peerConn is an accepted connection with what the kernel said about its
// peer; closing it gives its place back.
type peerConn struct {
	*net.UnixConn
	info  peerInfo
	l     *limitListener
	timer *time.Timer
	once  sync.Once
}

func (c *peerConn) Close() error {
	err := c.UnixConn.Close()
	c.once.Do(func() {
		if c.timer != nil {
			c.timer.Stop()
		}
		c.l.open.Add(-1)
		if !c.info.Allowed {
			c.l.openRefused.Add(-1)
		}
	})
	return err
}
