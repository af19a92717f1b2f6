package admin

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// slowloris holds n connections to addr that each send half a request and
// reconnect as soon as the server closes them, until ctx ends; it counts
// the connections it made.
func slowloris(ctx context.Context, addr string, n int, made *atomic.Int64) (wait func()) {
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for ctx.Err() == nil {
				c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
				if err != nil {
					continue
				}
				made.Add(1)
				stop := context.AfterFunc(ctx, func() { c.Close() })
				if _, err := io.WriteString(c, "GET /status HTTP/1.1\r\nHost: bridge\r\nX-Slow: "); err == nil {
					_, _ = io.Copy(io.Discard, c) // until the server closes it
				}
				stop()
				c.Close()
			}
		})
	}
	return wg.Wait
}

// TestProbesAreAnsweredWhileASlowlorisHoldsEveryConnection: 64 clients
// that send half a request and reconnect whenever they are closed hold
// every one of admin.max_connections (8 here) for good; every one of 30
// /livez and 30 /readyz probes, each on a new connection as the kubelet
// makes them, is still answered. Before, a probe's connection was closed
// as one too many, and /livez failed 29 times out of 30.
func TestProbesAreAnsweredWhileASlowlorisHoldsEveryConnection(t *testing.T) {
	const maxConns, attackers, probes = 8, 64, 30
	logs := &testkit.LogBuffer{}
	s, err := New(Config{Source: noSource{}, MaxConnections: maxConns, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, l) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()

	attack, stopAttack := context.WithCancel(context.Background())
	var made atomic.Int64
	wait := slowloris(attack, l.Addr().String(), attackers, &made)
	defer func() {
		stopAttack()
		wait()
	}()
	testkit.Eventually(t, "the slowloris holding every place", func() bool {
		return strings.Contains(logs.String(), "connections closed at once")
	})

	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: testkit.Timeout}
	answered := map[string]int{}
	for i := range 2 * probes {
		path := []string{"/livez", "/readyz"}[i%2]
		resp, err := client.Get("http://" + l.Addr().String() + path)
		if err != nil {
			t.Errorf("probe %d of %s: %v", i/2+1, path, err)
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		// /readyz answers 503 here (no update yet): answered is what counts.
		if path == "/livez" && resp.StatusCode != http.StatusOK {
			t.Errorf("probe %d of /livez: %s", i/2+1, resp.Status)
			continue
		}
		answered[path]++
	}
	before := made.Load()
	testkit.Eventually(t, "the slowloris still reconnecting", func() bool { return made.Load() > before+attackers })
	t.Logf("answered %d/%d /livez and %d/%d /readyz probes while %d slowloris clients made %d connections",
		answered["/livez"], probes, answered["/readyz"], probes, attackers, made.Load())
}
