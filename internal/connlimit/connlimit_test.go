package connlimit

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// serve accepts on l and holds every connection until the test ends.
func serve(t *testing.T, l net.Listener) {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var held []net.Conn
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
		for _, c := range held {
			c.Close()
		}
	})
}

// closedByServer reports whether the server end of c is closed: a read
// ends with EOF (or a reset) instead of timing out.
func closedByServer(c net.Conn, within time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(within))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return errors.Is(err, io.EOF) || (err != nil && !(errors.As(err, &ne) && ne.Timeout()))
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// At most Max connections are open; the next is closed at once, counted
// and reported (once per ReportEvery); a limited one may hold only
// MaxLimited places and is closed after LimitedLifetime, which gives its
// place back.
func TestConnectionsOverACapAreClosedAtOnceAndLimitedOnesExpire(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var overCap atomic.Int64
	var reported atomic.Int64
	// Limited clients dial from 127.0.0.2 (all of 127/8 is loopback).
	limitedIP := net.IPv4(127, 0, 0, 2)
	l := New(inner, Config{
		Max: 3, MaxLimited: 1, LimitedLifetime: 2 * time.Second, OverCap: &overCap,
		Classify: func(c net.Conn) (any, bool) {
			return nil, c.RemoteAddr().(*net.TCPAddr).IP.Equal(limitedIP)
		},
		Report:      func(closed int64, _ *Conn) { reported.Add(closed) },
		ReportEvery: time.Hour,
	})
	serve(t, l)
	dial := func(asLimited bool) net.Conn {
		t.Helper()
		from := net.IPv4(127, 0, 0, 1)
		if asLimited {
			from = limitedIP
		}
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: from}}
		c, err := d.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	waitOpen := func(n int64) {
		t.Helper()
		testkit.Eventually(t, "open connections", func() bool { return l.Open.Load() == n })
	}

	dial(false)
	waitOpen(1)
	lim := dial(true)
	waitOpen(2)
	if !closedByServer(dial(true), time.Second) || overCap.Load() != 1 {
		t.Errorf("a second limited connection was not closed at once (over cap %d)", overCap.Load())
	}
	dial(false)
	waitOpen(3)
	if !closedByServer(dial(false), time.Second) || overCap.Load() != 2 {
		t.Errorf("a connection over Max was not closed at once (over cap %d)", overCap.Load())
	}
	if reported.Load() != 1 {
		t.Errorf("reported %d closings within ReportEvery, want the first one only", reported.Load())
	}
	if !closedByServer(lim, 5*time.Second) {
		t.Error("the limited connection outlived LimitedLifetime")
	}
	waitOpen(2)
	if l.OpenLimited.Load() != 0 {
		t.Errorf("OpenLimited = %d after the limited connection closed", l.OpenLimited.Load())
	}
}

// TestReserveLetsChosenConnectionsInOverTheCap: once Max is taken, a
// connection Reserve picks takes one of MaxReserved places beyond it (and
// only then: under the cap Reserve is not asked); one it does not pick,
// or one more once the reserve is taken, is closed at once; closing a
// reserved connection gives its reserved place back, not one of Max.
func TestReserveLetsChosenConnectionsInOverTheCap(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var pick, asked atomic.Bool
	l := New(inner, Config{Max: 2, MaxReserved: 1, Reserve: func(net.Conn) bool {
		asked.Store(true)
		return pick.Load()
	}})
	accepted, wait := acceptAll(l)
	var clients []net.Conn
	dial := func() net.Conn {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
		return c
	}
	defer func() {
		l.Close()
		wait()
		for c := range accepted {
			c.Close()
		}
		for _, c := range clients {
			c.Close()
		}
	}()
	var inCap []*Conn
	for range 2 {
		dial()
		inCap = append(inCap, <-accepted)
	}
	if asked.Load() || inCap[0].Reserved() || inCap[1].Reserved() {
		t.Fatal("Reserve was asked, or a place reserved, under the cap")
	}
	if c := dial(); !closedByServer(c, testkit.Timeout) {
		t.Error("a connection Reserve did not pick stayed open over the cap")
	}
	pick.Store(true)
	dial()
	reserved := <-accepted
	if !reserved.Reserved() || l.Open.Load() != 2 || l.OpenReserved.Load() != 1 {
		t.Fatalf("reserved %t, open %d, open reserved %d; want true, 2, 1", reserved.Reserved(), l.Open.Load(), l.OpenReserved.Load())
	}
	if c := dial(); !closedByServer(c, testkit.Timeout) {
		t.Error("a picked connection stayed open with the reserve taken")
	}
	reserved.Close()
	if l.Open.Load() != 2 || l.OpenReserved.Load() != 0 {
		t.Errorf("after closing the reserved one: open %d, open reserved %d; want 2, 0", l.Open.Load(), l.OpenReserved.Load())
	}
	dial()
	if again := <-accepted; !again.Reserved() {
		t.Error("the reserved place was not given back")
	}
}

// acceptAll hands every connection l accepts to the channel, which is
// closed once l is.
func acceptAll(l *Listener) (<-chan *Conn, func()) {
	accepted := make(chan *Conn, 8)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(accepted)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c.(*Conn)
		}
	})
	return accepted, wg.Wait
}
