package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/exp/trace"
)

// mark is one step of a rotation: when, on which goroutine, what.
type mark struct {
	key  string // stable name, for the summary
	what string
	role string
	g    trace.GoID
	at   trace.Time
}

// breakdown is one rotation's steps, in the order of the push paths.
type breakdown struct {
	td    *traceData
	zero  trace.Time
	marks []mark
	notes []string // where the time went inside steps
}

// window bounds the search around a rotation: rotations are seconds apart.
const (
	before = 50 * time.Millisecond
	after  = 200 * time.Millisecond
)

// breakdown follows one rotation from the Workload API read to the bridge's
// SDS client and folder watch.
func (td *traceData) breakdown(r rotation) *breakdown {
	b := &breakdown{td: td, zero: td.traceTime(r.zero)}
	lo, hi := b.zero-trace.Time(before), b.zero+trace.Time(after)
	reader, woke := td.first(lo, hi, func(g *goroutine, t transition) bool {
		return g.role == roleReader && t.to == trace.GoRunnable
	})
	if reader == nil {
		b.notes = append(b.notes, "no Workload API read found in the window")
		return b
	}
	b.add("api-wake", "Workload API bytes arrive: gRPC's reader made runnable (netpoll)", reader, woke)
	rRun := b.running("api-run", "reader running", reader, woke, hi)
	watch, wWoke := td.first(woke, hi, func(g *goroutine, t transition) bool {
		return g.role == roleWatch && t.to == trace.GoRunnable
	})
	if watch == nil {
		return b
	}
	b.add("watch-wake", "go-spiffe watcher handed the response", watch, wWoke)
	b.note(reader, rRun, wWoke, "reader from running to handing over the response")
	wRun := b.running("watch-run", "watcher running (parse, validate, offer)", watch, wWoke, hi)
	for _, sink := range []struct{ role, key string }{{roleSDSSink, "sds"}, {roleFolderSink, "folder"}} {
		g, offered := td.first(wRun, hi, func(g *goroutine, t transition) bool {
			return g.role == sink.role && t.to == trace.GoRunnable
		})
		if g == nil {
			b.notes = append(b.notes, "no "+sink.role+" woken")
			continue
		}
		b.add(sink.key+"-offer", "validated Update offered: "+sink.role+" made runnable", g, offered)
		if sink.role == roleSDSSink {
			b.note(watch, wRun, offered, "watcher from running to the offer (parse, validate)")
		}
		run := b.running(sink.key+"-run", sink.role+" running Apply", g, offered, hi)
		b.busy(offered, run, sink.role+" waiting for a P")
		if sink.role == roleSDSSink {
			b.sdsPath(g, run, hi, r.sdsClient)
		} else {
			b.folderPath(g, run, hi, r.folder)
		}
	}
	slices.SortStableFunc(b.marks, func(x, y mark) int { return int(x.at - y.at) })
	return b
}

// sdsPath: the sink wakes a stream goroutine, which queues the response
// for gRPC's writer, which writes it to the socket.
func (b *breakdown) sdsPath(sink *goroutine, run, hi trace.Time, client time.Time) {
	td := b.td
	stream, woke := td.first(run, hi, func(g *goroutine, t transition) bool {
		return g.role == roleStream && t.to == trace.GoRunnable
	})
	if stream != nil {
		b.add("stream-wake", "stream goroutine made runnable", stream, woke)
		b.note(sink, run, woke, "SDS sink from running to waking the stream")
		sRun := b.running("stream-run", "stream goroutine running (build, send)", stream, woke, hi)
		run = sRun
	}
	writer, wWoke := td.first(run, hi, func(g *goroutine, t transition) bool {
		return g.role == roleSDSWriter && t.to == trace.GoRunnable
	})
	if writer != nil {
		b.add("writer-wake", "gRPC's writer (loopy) made runnable", writer, wWoke)
		b.running("writer-run", "writer running", writer, wWoke, hi)
	}
	w, at := td.first(run, hi, func(g *goroutine, t transition) bool {
		return g.role == roleSDSWriter && t.to == trace.GoSyscall && strings.Contains(t.stack, "Write")
	})
	if w != nil {
		b.add("sds-write", "write(2) on the SDS socket", w, at)
	}
	if !client.IsZero() {
		b.marks = append(b.marks, mark{key: "sds-client", what: "bridge's SDS client has the leaf (outside the bridge)", at: td.traceTime(client)})
	}
}

// folderPath: the folder sink writes a generation, fsyncing as it goes,
// then renames ..data onto it.
func (b *breakdown) folderPath(sink *goroutine, run, hi trace.Time, watched time.Time) {
	n, calls, last := 0, 0, run
	var syncTotal, callTotal time.Duration
loop:
	for i, t := range sink.trans {
		if t.at < run || t.at > hi || t.to != trace.GoSyscall {
			continue
		}
		end := sink.syscallEnd(i)
		calls++
		callTotal += time.Duration(end - t.at)
		switch {
		case strings.Contains(t.stack, "(*FD).Fsync"):
			n++
			syncTotal += time.Duration(end - t.at)
			b.add(fmt.Sprintf("fsync-%d", n), fmt.Sprintf("fsync #%d (%s)", n, fmtDur(time.Duration(end-t.at))), sink, t.at)
		case strings.Contains(t.stack, "replaceSymlink") && strings.Contains(t.stack, "Rename"):
			b.add("rename", "rename of ..data", sink, t.at)
			last = end
			break loop
		}
	}
	b.notes = append(b.notes, fmt.Sprintf("folder sink: %d syscalls in %s, of which %d fsyncs in %s", calls, fmtDur(callTotal), n, fmtDur(syncTotal)))
	b.note(sink, run, last, "folder sink from running to the ..data rename")
	if !watched.IsZero() {
		b.marks = append(b.marks, mark{key: "folder-watch", what: "..data rename seen by the folder watch (outside the bridge)", at: b.td.traceTime(watched)})
	}
}

// syscallEnd is when the syscall begun at trans[i] returned.
func (g *goroutine) syscallEnd(i int) trace.Time {
	for _, t := range g.trans[i+1:] {
		if t.from == trace.GoSyscall {
			return t.at
		}
	}
	return g.trans[i].at
}

// first is the earliest transition in [lo, hi] that match accepts.
func (td *traceData) first(lo, hi trace.Time, match func(*goroutine, transition) bool) (*goroutine, trace.Time) {
	var best *goroutine
	var at trace.Time
	for _, g := range td.gs {
		for _, t := range g.trans {
			if t.at < lo || t.at > hi || (best != nil && t.at >= at) {
				continue
			}
			if match(g, t) {
				best, at = g, t.at
			}
		}
	}
	return best, at
}

func (b *breakdown) add(key, what string, g *goroutine, at trace.Time) {
	b.marks = append(b.marks, mark{key: key, what: what, role: g.role, g: g.id, at: at})
}

// running marks when g first ran after from, and returns that time (from
// when it never ran before hi).
func (b *breakdown) running(key, what string, g *goroutine, from, hi trace.Time) trace.Time {
	for _, t := range g.trans {
		if t.at >= from && t.at <= hi && t.to == trace.GoRunning && t.from == trace.GoRunnable {
			b.add(key, what+fmt.Sprintf(" (waited %s for a P)", fmtDur(time.Duration(t.at-from))), g, t.at)
			return t.at
		}
	}
	return from
}

// note records how g spent [from, to]: running, runnable (waiting for a
// CPU), in syscalls, blocked (and on what).
func (b *breakdown) note(g *goroutine, from, to trace.Time, what string) {
	if to <= from {
		return
	}
	spent := map[trace.GoState]time.Duration{}
	blocked := map[string]time.Duration{}
	state, since, reason := trace.GoRunning, from, ""
	for _, t := range g.trans {
		if t.at <= from {
			state, reason = t.to, t.reason
			continue
		}
		if t.at > to {
			break
		}
		spent[state] += time.Duration(t.at - since)
		if state == trace.GoWaiting {
			blocked[reason] += time.Duration(t.at - since)
		}
		state, since, reason = t.to, t.at, t.reason
	}
	spent[state] += time.Duration(to - since)
	if state == trace.GoWaiting {
		blocked[reason] += time.Duration(to - since)
	}
	s := fmt.Sprintf("%s: %s = running %s, runnable %s, syscall %s", what, fmtDur(time.Duration(to-from)),
		fmtDur(spent[trace.GoRunning]), fmtDur(spent[trace.GoRunnable]), fmtDur(spent[trace.GoSyscall]))
	for r, d := range blocked {
		s += fmt.Sprintf(", blocked on %q %s", r, fmtDur(d))
	}
	b.notes = append(b.notes, s)
}

// busy notes which goroutines ran during [from, to], the longest first:
// what a runnable goroutine waited behind.
func (b *breakdown) busy(from, to trace.Time, what string) {
	if to-from < trace.Time(50*time.Microsecond) {
		return
	}
	type ran struct {
		g *goroutine
		d time.Duration
	}
	var all []ran
	for _, g := range b.td.gs {
		if d := g.runningIn(from, to); d > 0 {
			all = append(all, ran{g, d})
		}
	}
	slices.SortFunc(all, func(x, y ran) int { return int(y.d - x.d) })
	var idle time.Duration
	for _, changes := range b.td.procs {
		idle += idleIn(changes, from, to)
	}
	s := fmt.Sprintf("%s (%s; Ps idle meanwhile %s), the Ps ran:", what, fmtDur(time.Duration(to-from)), fmtDur(idle))
	for _, r := range all[:min(len(all), 4)] {
		s += fmt.Sprintf(" %s g%d %s;", r.g.label(), r.g.id, fmtDur(r.d))
	}
	b.notes = append(b.notes, strings.TrimSuffix(s, ";"))
}

// idleIn is how long a P was idle within [from, to].
func idleIn(changes []procChange, from, to trace.Time) time.Duration {
	return timeIn(len(changes), func(i int) trace.Time { return changes[i].at },
		func(i int) bool { return !changes[i].running }, from, to)
}

// runningIn is how long g was running within [from, to].
func (g *goroutine) runningIn(from, to trace.Time) time.Duration {
	return timeIn(len(g.trans), func(i int) trace.Time { return g.trans[i].at },
		func(i int) bool { return g.trans[i].to == trace.GoRunning }, from, to)
}

// timeIn is how long, within [from, to], a series of n changes in time
// order (change i at at(i)) was in the state that in(i) says change i
// entered.
func timeIn(n int, at func(int) trace.Time, in func(int) bool, from, to trace.Time) time.Duration {
	var d time.Duration
	inState, since := false, from
	for i := range n {
		t := at(i)
		if t >= to {
			break
		}
		if t > from && inState {
			d += time.Duration(t - since)
		}
		inState, since = in(i), max(t, from)
	}
	if inState {
		d += time.Duration(to - since)
	}
	return d
}

func (b *breakdown) print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	prev := b.zero
	for i, m := range b.marks {
		step := "-"
		if i > 0 {
			step = "+" + fmtDur(time.Duration(m.at-prev))
		}
		who := "-"
		if m.role != "" {
			who = fmt.Sprintf("[%s g%d]", m.role, m.g)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", fmtMs(time.Duration(m.at-b.zero)), step, who, m.what)
		prev = m.at
	}
	tw.Flush()
	for _, n := range b.notes {
		fmt.Fprintf(w, "    %s\n", n)
	}
}

// steps are the hand-offs the summary reports, as (from, to) mark keys.
var steps = []struct{ from, to, what string }{
	{"api-wake", "watch-wake", "gRPC reader: bytes arrived → response handed to go-spiffe"},
	{"watch-wake", "sds-offer", "go-spiffe watcher: scheduled, parse, validate → Update offered"},
	{"sds-offer", "sds-run", "SDS sink waits for a P"},
	{"sds-run", "stream-wake", "SDS sink Apply → stream goroutine woken"},
	{"stream-wake", "sds-write", "stream goroutine → gRPC's writer → write(2)"},
	{"sds-write", "sds-client", "socket → the SDS client has it (outside the bridge)"},
	{"api-wake", "sds-write", "SDS path in the bridge: bytes in → bytes out"},
	{"folder-offer", "folder-run", "folder sink waits for a P"},
	{"folder-run", "rename", "folder sink Apply → rename of ..data"},
	{"rename", "folder-watch", "rename → the folder watch has it (outside the bridge)"},
	{"api-wake", "rename", "folder path in the bridge: bytes in → ..data renamed"},
}

// summarize prints the median of each step over every rotation that had
// both of its marks.
func summarize(w io.Writer, all []*breakdown) {
	fmt.Fprintf(w, "median of each hand-off over %d rotations (n: rotations that had it):\n", len(all))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	for _, st := range steps {
		var d []time.Duration
		for _, b := range all {
			from, ok1 := b.at(st.from)
			to, ok2 := b.at(st.to)
			if ok1 && ok2 {
				d = append(d, time.Duration(to-from))
			}
		}
		if len(d) == 0 {
			continue
		}
		slices.Sort(d)
		fmt.Fprintf(tw, "  %s\t%s\tn=%d\t\n", st.what, fmtDur(d[len(d)/2]), len(d))
	}
	tw.Flush()
	first := 0
	for _, b := range all {
		f, ok1 := b.at("folder-run")
		s, ok2 := b.at("sds-run")
		if ok1 && ok2 && f < s {
			first++
		}
	}
	fmt.Fprintf(w, "  the folder sink ran before the SDS sink in %d of %d rotations\n", first, len(all))
}

// at is when the mark key happened in b.
func (b *breakdown) at(key string) (trace.Time, bool) {
	for _, m := range b.marks {
		if m.key == key {
			return m.at, true
		}
	}
	return 0, false
}

func fmtMs(d time.Duration) string { return fmt.Sprintf("%+.3f", float64(d)/float64(time.Millisecond)) }

func fmtDur(d time.Duration) string {
	if d < time.Millisecond && d > -time.Millisecond {
		return fmt.Sprintf("%d µs", d.Microseconds())
	}
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}
