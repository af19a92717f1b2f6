package rotation

import (
	"context"
	"log/slog"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sds-bridge/sds-bridge/internal/devapi"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// TestWatchRetriesDoubleUpToTheCapAndStartOverAfterAResponse: the wait
// between failed watches never exceeds MaxWatchBackoff however long the
// agent stays away (go-spiffe's own grows to 30 s), and a watch that
// delivered starts again from the first, short wait.
func TestWatchRetriesDoubleUpToTheCapAndStartOverAfterAResponse(t *testing.T) {
	b := watchBackoffStrategy{}.NewBackoff()
	var got []time.Duration
	for range 8 {
		got = append(got, b.Next())
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second,
		5 * time.Second, 5 * time.Second, 5 * time.Second, 5 * time.Second}
	if !slices.Equal(got, want) {
		t.Errorf("waits between failed watches = %v, want %v", got, want)
	}
	b.Reset()
	if d := b.Next(); d != firstWatchBackoff {
		t.Errorf("first wait after a response = %s, want %s", d, firstWatchBackoff)
	}
}

// awayRE reads the reconnect line of a text log.
var awayRE = regexp.MustCompile(`msg="Workload API reconnected after [^"]+" away=(\S+) failed_attempts=(\d+)`)

// TestWorkloadAPIBackAfterAnOutageIsLoggedWithHowLongItWasAway: when the
// Workload API goes away (its server stops, as a restarting agent's does)
// and comes back, the next update is applied, one line says the Workload
// API reconnected and how long it was away — a span that covers the
// outage as the test saw it — and the reconnect is counted once.
func TestWorkloadAPIBackAfterAnOutageIsLoggedWithHowLongItWasAway(t *testing.T) {
	t.Parallel()
	var logs testkit.LogBuffer
	sink := newRecordingSink("sink")
	h := start(t, Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))}, sink)
	h.push(h.issue(devapi.SVIDOptions{}))
	sink.waitGen(t, 1)

	stopped := time.Now()
	h.wl.Stop()
	// Two failed calls: the outage spans at least one retry.
	testkit.Eventually(t, "a first failed watch", func() bool { return h.src.Counters().WatchErrors >= 1 })
	firstFailureSeen := time.Now()
	testkit.Eventually(t, "a failed retry", func() bool { return h.src.Counters().WatchErrors >= 2 })
	if c := h.src.Counters(); c.Reconnects != 0 {
		t.Fatalf("counters while the Workload API is away: %+v", c)
	}
	h.push(h.issue(devapi.SVIDOptions{}))
	restarted := time.Now()
	if err := h.wl.Start(); err != nil {
		t.Fatal(err)
	}
	sink.waitGen(t, 2)
	applied := time.Now()

	// The line is written once the sinks were offered the update.
	testkit.Eventually(t, "the reconnect logged", func() bool { return awayRE.MatchString(logs.String()) })
	lines := awayRE.FindAllStringSubmatch(logs.String(), -1)
	if len(lines) != 1 {
		t.Fatalf("%d reconnect lines, want 1:\n%s", len(lines), logs.String())
	}
	away, err := time.ParseDuration(lines[0][1])
	if err != nil {
		t.Fatal(err)
	}
	// The outage began after Stop and no later than the first failure
	// seen; it ended after Start and before the update was applied.
	if lo, hi := restarted.Sub(firstFailureSeen), applied.Sub(stopped); away < lo || away > hi {
		t.Errorf("away = %s, want between %s and %s", away, lo, hi)
	}
	if lines[0][2] == "0" || lines[0][2] == "1" {
		t.Errorf("failed_attempts = %s, want at least 2", lines[0][2])
	}
	if c := h.src.Counters(); c.Reconnects != 1 {
		t.Errorf("counters after the Workload API came back: %+v, want 1 reconnect", c)
	}
}

// TestWorkloadAPIThatAnswersLateAtStartIsNoReconnect: a Workload API not
// yet listening when the bridge starts (an agent starting beside it) is a
// wait FirstUpdateTimeout bounds, not an outage: its first answer is
// neither logged nor counted as a reconnect.
func TestWorkloadAPIThatAnswersLateAtStartIsNoReconnect(t *testing.T) {
	t.Parallel()
	var logs testkit.LogBuffer
	authority, err := devapi.NewCA(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	wl := devapi.NewServer(devapi.ServerConfig{SocketPath: filepath.Join(testkit.ShortDir(t), "wl.sock"), Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(wl.Stop)
	sink := newRecordingSink("sink")
	src, err := New(Config{Address: wl.Address(), Sinks: []Sink{sink}, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- src.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-ran; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	testkit.Eventually(t, "a failed watch", func() bool { return src.Counters().WatchErrors >= 1 })

	h := &harness{t: t, ca: authority, wl: wl}
	h.push(h.issue(devapi.SVIDOptions{}))
	if err := wl.Start(); err != nil {
		t.Fatal(err)
	}
	sink.waitGen(t, 1)
	// go-spiffe hands over one context at a time: once the second is
	// applied, the first one's log lines are written.
	h.push(h.issue(devapi.SVIDOptions{}))
	sink.waitGen(t, 2)
	if c := src.Counters(); c.Reconnects != 0 {
		t.Errorf("counters after a late first answer: %+v, want no reconnect", c)
	}
	if strings.Contains(logs.String(), "reconnected") {
		t.Errorf("a late first answer logged as a reconnect:\n%s", logs.String())
	}
}
