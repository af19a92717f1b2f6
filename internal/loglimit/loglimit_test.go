package loglimit

import (
	"bufio"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a test clock moved by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// limited is a JSON logger behind a Handler with a hand-moved clock and
// summaries only on Flush (the timer is an hour away).
func limited(t *testing.T, cfg Config) (*slog.Logger, *Handler, *testkit.LogBuffer, *clock) {
	t.Helper()
	var out testkit.LogBuffer
	c := &clock{now: time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC)}
	if cfg.Now == nil {
		cfg.Now = c.Now
	}
	if cfg.SummaryEvery == 0 {
		cfg.SummaryEvery = time.Hour
	}
	h := New(slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug}), cfg)
	t.Cleanup(h.Close)
	return slog.New(h), h, &out, c
}

// lines decodes every JSON line written.
func lines(t *testing.T, out *testkit.LogBuffer) []map[string]any {
	t.Helper()
	var got []map[string]any
	sc := bufio.NewScanner(strings.NewReader(out.String()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("not a JSON line: %q: %v", sc.Text(), err)
		}
		got = append(got, m)
	}
	return got
}

// countMsg counts the lines with message msg.
func countMsg(ls []map[string]any, msg string) int {
	n := 0
	for _, l := range ls {
		if l["msg"] == msg {
			n++
		}
	}
	return n
}

// TestARepeatedLineIsSuppressedPastTheBurstAndCounted: 1,000 lines of one
// kind (the attributes of each differ, as an error text or a generation
// would) let the burst through, and the summary then says how many were
// left out, at their level, with their message.
func TestARepeatedLineIsSuppressedPastTheBurstAndCounted(t *testing.T) {
	log, h, out, _ := limited(t, Config{Burst: 10})
	for i := range 1000 {
		log.Error("refused Workload API update", "error", fmt.Sprintf("expired %d", i))
	}
	h.Flush()
	ls := lines(t, out)
	if n := countMsg(ls, "refused Workload API update"); n != 10 {
		t.Errorf("%d lines passed, want the burst of 10", n)
	}
	if len(ls) != 11 {
		t.Fatalf("%d lines, want 10 and a summary:\n%s", len(ls), out)
	}
	sum := ls[10]
	if sum["msg"] != "suppressed 990 similar lines" || sum["like"] != "refused Workload API update" ||
		sum["suppressed"] != 990.0 || sum["level"] != "ERROR" {
		t.Errorf("summary %v", sum)
	}
	h.Flush()
	if n := len(lines(t, out)); n != 11 {
		t.Errorf("a second Flush with nothing suppressed wrote %d lines", n-11)
	}
}

// TestAKindPassesAgainAtTheRate: once the burst is spent, a kind passes
// Rate lines per second of its clock, never more, and a quiet spell earns
// back at most the burst.
func TestAKindPassesAgainAtTheRate(t *testing.T) {
	log, _, out, c := limited(t, Config{Burst: 2, Rate: 1})
	for range 5 {
		log.Warn("flood")
	}
	for range 3 {
		c.add(time.Second)
		for range 5 {
			log.Warn("flood")
		}
	}
	if n := countMsg(lines(t, out), "flood"); n != 2+3 {
		t.Errorf("%d lines passed, want a burst of 2 and 1 per second for 3 s", n)
	}
	c.add(time.Hour)
	for range 5 {
		log.Warn("flood")
	}
	if n := countMsg(lines(t, out), "flood"); n != 2+3+2 {
		t.Errorf("%d lines passed after an hour's quiet, want the burst of 2 more", n-5)
	}
}

// TestKindsAreKeptApartByLevelMessageAndLoggerAttributes: the same failure
// of two folders (loggers With different dirs), the same message at
// another level, and another message each have their own budget; the
// summary carries its logger's attributes, so it says which folder.
func TestKindsAreKeptApartByLevelMessageAndLoggerAttributes(t *testing.T) {
	log, h, out, _ := limited(t, Config{Burst: 3})
	a, b := log.With("dir", "/a"), log.With("dir", "/b")
	for range 10 {
		a.Error("apply failed")
		b.Error("apply failed")
		a.Warn("apply failed")
		a.Error("other")
	}
	h.Flush()
	count := map[string]int{}
	for _, l := range lines(t, out) {
		count[fmt.Sprint(l["level"], " ", l["dir"], " ", l["msg"])]++
	}
	for _, k := range []string{"ERROR /a apply failed", "ERROR /b apply failed", "WARN /a apply failed", "ERROR /a other"} {
		if count[k] != 3 {
			t.Errorf("%q passed %d times, want its own burst of 3 (%v)", k, count[k], count)
		}
	}
	if count["ERROR /b suppressed 7 similar lines"] != 1 {
		t.Errorf("no summary for /b's lines: %v", count)
	}
}

// TestDebugLinesAreNeverSuppressed: debug output is asked for, volume and
// all.
func TestDebugLinesAreNeverSuppressed(t *testing.T) {
	log, _, out, _ := limited(t, Config{Burst: 1})
	for range 100 {
		log.Debug("push")
	}
	if n := countMsg(lines(t, out), "push"); n != 100 {
		t.Errorf("%d of 100 debug lines passed", n)
	}
}

// TestTheCountIsLoggedWhenTheFloodStops: no further line is needed for
// the summary to appear: it follows SummaryEvery after the first
// suppressed line.
func TestTheCountIsLoggedWhenTheFloodStops(t *testing.T) {
	var out testkit.LogBuffer
	h := New(slog.NewJSONHandler(&out, nil), Config{Burst: 1, SummaryEvery: 10 * time.Millisecond})
	defer h.Close()
	log := slog.New(h)
	for range 5 {
		log.Error("flood")
	}
	testkit.Eventually(t, "the summary", func() bool {
		return strings.Contains(out.String(), `"msg":"suppressed 4 similar lines"`)
	})
}

// TestKindsAreBoundedWhateverTheMessages: messages that are all different
// (a message built from client input) cannot grow the tracked kinds past
// MaxKinds, nor pass more than one line per tracked kind (each still has
// tokens, so none is forgotten) and one shared burst; the summary says so.
func TestKindsAreBoundedWhateverTheMessages(t *testing.T) {
	log, h, out, _ := limited(t, Config{Burst: 2, MaxKinds: 4})
	for i := range 10_000 {
		log.Error(fmt.Sprintf("message %d", i))
	}
	h.state.mu.Lock()
	kinds := len(h.state.kinds)
	h.state.mu.Unlock()
	if kinds > 4 {
		t.Errorf("%d kinds tracked, want at most 4", kinds)
	}
	h.Flush()
	ls := lines(t, out)
	if len(ls) != 4+2+1 {
		t.Errorf("%d lines, want 4 tracked kinds, a shared burst of 2 and one summary", len(ls))
	}
	last := ls[len(ls)-1]
	if last["suppressed"] != 10_000.0-6 || !strings.Contains(fmt.Sprint(last["like"]), "more kinds than the 4 tracked") {
		t.Errorf("summary %v", last)
	}
}

// TestAnIdleKindMakesRoomForANewOne: a kind that has earned its burst
// back and has nothing pending is forgotten when a new kind needs room,
// so the shared budget is only for a real storm of kinds.
func TestAnIdleKindMakesRoomForANewOne(t *testing.T) {
	log, h, out, c := limited(t, Config{Burst: 2, MaxKinds: 2})
	log.Error("a")
	log.Error("b")
	c.add(time.Hour)
	for range 2 {
		log.Error("c")
	}
	h.state.mu.Lock()
	_, tracked := h.state.kinds["ERROR\x00c"]
	overflow := h.state.overflow
	h.state.mu.Unlock()
	if !tracked || overflow != nil {
		t.Errorf("c tracked %v, overflow used %v", tracked, overflow != nil)
	}
	if n := countMsg(lines(t, out), "c"); n != 2 {
		t.Errorf("c passed %d times, want its burst of 2", n)
	}
}
