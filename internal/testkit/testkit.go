// Package testkit is what the tests of every package share: reading logs
// written from many goroutines, sending logs to the test's own log, a
// bounded wait for a condition, snapshots of a directory tree, and
// re-running the test binary as another uid to flood a server with
// connections. Nothing here is used outside tests.
package testkit

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// Timeout bounds every wait in tests: a guard against hangs, never a speed
// requirement.
const Timeout = 30 * time.Second

// LogBuffer collects log output written from many goroutines; slog handlers
// may write from any of them.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Logger logs at debug level into tb's log; benchmarks get a discarding
// logger so that logging does not become what they measure.
func Logger(tb testing.TB) *slog.Logger {
	if _, ok := tb.(*testing.B); ok {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Helper()
	w.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Eventually checks cond every few milliseconds until it holds, and fails
// the test naming what it waited for after Timeout.
func Eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(Timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ShortDir is a temporary directory with a short path, removed after the
// test: unix sockets live in it (sun_path holds about 100 bytes, which
// t.TempDir() under a long test name can exceed).
func ShortDir(tb testing.TB) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", "sb")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// httpClient keeps no connections: no connection (and goroutine) outlives
// a test.
var httpClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: Timeout}

// Get fetches url and returns its status code and body; a transport error
// fails the test.
func Get(tb testing.TB, url string) (int, string) {
	tb.Helper()
	resp, err := httpClient.Get(url)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// HoldConnections dials network addr attempts times (each dial bounded by
// a second) and returns the connections it opened, for the caller to hold
// and close: the attacker of a connection-cap test. Failed dials are not
// retried; attempts minus the length of the result is how many failed.
func HoldConnections(network, addr string, attempts int) []net.Conn {
	var held []net.Conn
	for range attempts {
		c, err := net.DialTimeout(network, addr, time.Second)
		if err != nil {
			continue
		}
		held = append(held, c)
	}
	return held
}
