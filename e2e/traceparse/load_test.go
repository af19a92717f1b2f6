package main

import (
	"bytes"
	"runtime/trace"
	"testing"
	"time"

	exptrace "golang.org/x/exp/trace"
)

// parkedForTest blocks on ch: its name on the stack is how the test finds
// its goroutine in the trace, as traceparse finds the bridge's.
//
//go:noinline
func parkedForTest(ch <-chan struct{}, done chan<- struct{}) {
	<-ch
	close(done)
}

// TestWallClockPlacesAWakeUpWhereItHappened checks the two things every
// breakdown rests on: a goroutine is found by a function on its stack, and
// the trace clock maps onto the wall clock, so that a wake-up the test
// caused between two wall-clock readings lands between them.
func TestWallClockPlacesAWakeUpWhereItHappened(t *testing.T) {
	var buf bytes.Buffer
	if err := trace.Start(&buf); err != nil {
		t.Fatal(err)
	}
	ch, done := make(chan struct{}), make(chan struct{})
	go parkedForTest(ch, done)
	time.Sleep(20 * time.Millisecond) // it parks
	before := time.Now()
	close(ch)
	<-done
	after := time.Now()
	trace.Stop()

	td, err := load(&buf)
	if err != nil {
		t.Fatal(err)
	}
	var g *goroutine
	for _, c := range td.gs {
		if c.funcs["sds-bridge/e2e/traceparse.parkedForTest"] {
			g = c
		}
	}
	if g == nil {
		t.Fatal("no goroutine with parkedForTest on its stack")
	}
	var woke exptrace.Time
	for _, tr := range g.trans {
		if tr.from == exptrace.GoWaiting && tr.to == exptrace.GoRunnable {
			woke = tr.at
		}
	}
	if woke == 0 {
		t.Fatalf("the goroutine was never woken: %+v", g.trans)
	}
	// The clock snapshot is taken at a sync point, not at this wake-up:
	// allow for the two clocks' reading error.
	const slack = time.Millisecond
	if at := td.wall(woke); at.Before(before.Add(-slack)) || at.After(after.Add(slack)) {
		t.Errorf("wake-up at %s, want within [%s, %s]", at.Format(time.StampMicro), before.Format(time.StampMicro), after.Format(time.StampMicro))
	}
	if back := td.traceTime(td.wall(woke)); back != woke {
		t.Errorf("traceTime(wall(t)) = %d, want %d", back, woke)
	}
}

// TestTimeInCountsOnlyTheWindow checks the state arithmetic the notes use.
func TestTimeInCountsOnlyTheWindow(t *testing.T) {
	// In the state from 10 to 20 and from 30 on.
	changes := []procChange{{at: 0, running: false}, {at: 10, running: true}, {at: 20, running: false}, {at: 30, running: true}}
	running := func(from, to exptrace.Time) time.Duration {
		return timeIn(len(changes), func(i int) exptrace.Time { return changes[i].at },
			func(i int) bool { return changes[i].running }, from, to)
	}
	for _, c := range []struct {
		from, to exptrace.Time
		want     time.Duration
	}{
		{0, 40, 20},
		{15, 35, 10},
		{12, 18, 6},
		{20, 30, 0},
		{35, 50, 15},
	} {
		if got := running(c.from, c.to); got != c.want {
			t.Errorf("in [%d, %d]: %d, want %d", c.from, c.to, got, c.want)
		}
	}
	if got := idleIn(changes, 0, 40); got != 20 {
		t.Errorf("idleIn = %d, want 20", got)
	}
}
