// Package connlimit caps the connections outsiders can hold on a
// listening socket (each is a descriptor folder swaps need too). One over
// the cap is closed at once, not left in the backlog as
// netutil.LimitListener does, so a flood cannot queue ahead of Envoy or
// the kubelet's probes; it is counted and reported.
package connlimit

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Config sets the caps of a Listener.
type Config struct {
	// Max caps the connections open at once.
	Max int64
	// Classify, if set, tags each connection (Conn.Tag); the limited ones
	// hold at most MaxLimited of Max and are closed after LimitedLifetime.
	Classify        func(net.Conn) (tag any, limited bool)
	MaxLimited      int64
	LimitedLifetime time.Duration
	// Reserve, if set, picks connections that find Max taken (the
	// kubelet's probes) for MaxReserved places kept beyond Max.
	Reserve     func(net.Conn) bool
	MaxReserved int64
	// OverCap, if set, counts the connections closed over a cap.
	OverCap *atomic.Int64
	// Report is told at most once per ReportEvery how many were closed
	// over a cap since, and the last one.
	Report      func(closed int64, last *Conn)
	ReportEvery time.Duration
}

// Listener accepts within the caps of its Config.
type Listener struct {
	net.Listener
	cfg Config
	// Open, OpenLimited and OpenReserved count the connections open now;
	// Open does not count the reserved ones.
	Open, OpenLimited, OpenReserved atomic.Int64

	mu         sync.Mutex
	lastReport time.Time
	unreported int64
}

// New caps l.
func New(l net.Listener, cfg Config) *Listener { return &Listener{Listener: l, cfg: cfg} }

// Accept returns the next connection within the caps, a *Conn. It runs on
// one goroutine and the counts only fall elsewhere, so check-then-increment
// never lets one too many in.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		conn := &Conn{Conn: c, l: l}
		if l.cfg.Classify != nil {
			conn.Tag, conn.limited = l.cfg.Classify(c)
		}
		if l.Open.Load() >= l.cfg.Max && !conn.limited && l.cfg.Reserve != nil &&
			l.OpenReserved.Load() < l.cfg.MaxReserved && l.cfg.Reserve(c) {
			conn.reserved = true
			l.OpenReserved.Add(1)
			return conn, nil
		}
		if l.Open.Load() >= l.cfg.Max || (conn.limited && l.OpenLimited.Load() >= l.cfg.MaxLimited) {
			// Counted before the close: whoever sees the close sees the count.
			if l.cfg.OverCap != nil {
				l.cfg.OverCap.Add(1)
			}
			l.report(conn)
			c.Close()
			continue
		}
		l.Open.Add(1)
		if conn.limited {
			l.OpenLimited.Add(1)
			conn.mu.Lock() // the timer may fire before the assignment ends
			conn.timer = time.AfterFunc(l.cfg.LimitedLifetime, func() { conn.Close() })
			conn.mu.Unlock()
		}
		return conn, nil
	}
}

func (l *Listener) report(last *Conn) {
	if l.cfg.Report == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.unreported++
	now := time.Now()
	if !l.lastReport.IsZero() && now.Sub(l.lastReport) < l.cfg.ReportEvery {
		return
	}
	l.cfg.Report(l.unreported, last)
	l.lastReport, l.unreported = now, 0
}

// Conn is an accepted connection; closing it gives its place back.
type Conn struct {
	net.Conn
	// Tag is what Config.Classify said about the connection.
	Tag      any
	limited  bool
	reserved bool
	l        *Listener
	once     sync.Once
	mu       sync.Mutex // guards timer
	timer    *time.Timer
}

// Reserved reports whether the connection holds one of the places
// Config.Reserve keeps.
func (c *Conn) Reserved() bool { return c.reserved }

func (c *Conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.mu.Lock()
		if c.timer != nil {
			c.timer.Stop()
		}
		c.mu.Unlock()
		if c.reserved {
			c.l.OpenReserved.Add(-1)
			return
		}
		c.l.Open.Add(-1)
		if c.limited {
			c.l.OpenLimited.Add(-1)
		}
	})
	return err
}
