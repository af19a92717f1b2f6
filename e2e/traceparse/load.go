package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"golang.org/x/exp/trace"
)

// transition is one goroutine state change.
type transition struct {
	at       trace.Time
	from, to trace.GoState
	reason   string
	by       trace.GoID // the goroutine that caused it (unblocks), or NoGoroutine
	stack    string     // the stack of whoever emitted the event, one function a line
}

// procChange is a P starting (running) or stopping (idle).
type procChange struct {
	at      trace.Time
	running bool
}

// goroutine is what the trace says about one goroutine.
type goroutine struct {
	id    trace.GoID
	role  string
	funcs map[string]bool // every function seen on its own stacks
	last  string          // the last of its own stacks
	trans []transition    // in time order
}

// traceData is a whole trace, by goroutine.
type traceData struct {
	gs    map[trace.GoID]*goroutine
	procs map[trace.ProcID][]procChange
	clock *trace.ClockSnapshot
}

func load(r io.Reader) (*traceData, error) {
	rd, err := trace.NewReader(r)
	if err != nil {
		return nil, err
	}
	td := &traceData{gs: map[trace.GoID]*goroutine{}, procs: map[trace.ProcID][]procChange{}}
	for {
		ev, err := rd.ReadEvent()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		switch ev.Kind() {
		case trace.EventSync:
			if cs := ev.Sync().ClockSnapshot; cs != nil && td.clock == nil {
				td.clock = cs
			}
		case trace.EventStateTransition:
			td.add(ev)
		}
	}
	if td.clock == nil {
		return nil, fmt.Errorf("no clock snapshot (a trace from before go1.25?)")
	}
	for _, g := range td.gs {
		g.role = roleOf(g.funcs)
	}
	return td, nil
}

func (td *traceData) g(id trace.GoID) *goroutine {
	g := td.gs[id]
	if g == nil {
		g = &goroutine{id: id, funcs: map[string]bool{}}
		td.gs[id] = g
	}
	return g
}

func (td *traceData) add(ev trace.Event) {
	st := ev.StateTransition()
	if st.Resource.Kind == trace.ResourceProc {
		_, to := st.Proc()
		id := st.Resource.Proc()
		td.procs[id] = append(td.procs[id], procChange{at: ev.Time(), running: to == trace.ProcRunning})
		return
	}
	if st.Resource.Kind != trace.ResourceGoroutine {
		return
	}
	from, to := st.Goroutine()
	id := st.Resource.Goroutine()
	t := transition{at: ev.Time(), from: from, to: to, reason: st.Reason, stack: stackString(ev.Stack())}
	g := td.g(id)
	if ev.Goroutine() == id || st.Stack != trace.NoStack {
		// Its own stack: a block, a syscall, its status at trace start.
		for f := range st.Stack.Frames() {
			g.funcs[f.Func] = true
		}
		if ev.Goroutine() == id {
			for f := range ev.Stack().Frames() {
				g.funcs[f.Func] = true
			}
		}
		if st.Stack != trace.NoStack {
			g.last = stackString(st.Stack)
		}
	}
	if ev.Goroutine() != id {
		t.by = ev.Goroutine()
		if by := ev.Goroutine(); by != trace.NoGoroutine {
			// What a goroutine does to others shows what it runs: the SDS
			// sink wakes stream goroutines from inside sds.
			for f := range ev.Stack().Frames() {
				td.g(by).funcs[f.Func] = true
			}
		}
	}
	g.trans = append(g.trans, t)
}

func stackString(s trace.Stack) string {
	var b strings.Builder
	for f := range s.Frames() {
		b.WriteString(f.Func)
		b.WriteByte('\n')
	}
	return b.String()
}

// Goroutine roles, found by the functions on their stacks.
const (
	roleReader     = "Workload API reader" // gRPC's http2Client reader
	roleWatch      = "go-spiffe watcher"   // receives, parses, calls rotation
	roleSDSSink    = "SDS sink"            // rotation deliverer running sds Apply
	roleFolderSink = "folder sink"         // rotation deliverer running filesink Apply
	roleStream     = "SDS stream"          // per-stream goroutine of the SDS server (or its push goroutine)
	roleSDSWriter  = "SDS writer"          // gRPC's server loopyWriter
	roleSDSReader  = "SDS conn reader"     // gRPC's server reader (ACKs)
	roleAPIWriter  = "Workload API writer" // gRPC's client loopyWriter
)

func roleOf(funcs map[string]bool) string {
	has := func(sub string) bool {
		for f := range funcs {
			if strings.Contains(f, sub) {
				return true
			}
		}
		return false
	}
	switch {
	case has("(*http2Client).reader"):
		return roleReader
	case has("watchX509Context"):
		return roleWatch
	case has("(*deliverer).run") && has("/filesink."):
		return roleFolderSink
	case has("(*deliverer).run") && has("/sds."):
		return roleSDSSink
	case has("loopyWriter") && has("NewServerTransport"):
		return roleSDSWriter
	case has("loopyWriter"):
		return roleAPIWriter
	case has("HandleStreams"):
		return roleSDSReader
	case has("StreamSecrets") || has("DeltaSecrets") || has("go-control-plane/pkg/server") || has("/sds.(*xdsStream)"):
		return roleStream
	}
	return ""
}

// wall converts a trace time to the wall clock.
func (td *traceData) wall(t trace.Time) time.Time {
	return td.clock.Wall.Add(time.Duration(t - td.clock.Trace))
}

// traceTime converts a wall-clock time to trace time.
func (td *traceData) traceTime(w time.Time) trace.Time {
	return td.clock.Trace + trace.Time(w.Sub(td.clock.Wall))
}

// label is g's role, or else the first function of its last stack that is
// not the runtime's or the standard library's plumbing.
func (g *goroutine) label() string {
	if g.role != "" {
		return g.role
	}
	for f := range strings.SplitSeq(g.last, "\n") {
		// Outside the standard library a path starts with a host name.
		if i := strings.Index(f, "/"); i > 0 && strings.Contains(f[:i], ".") {
			return f
		}
	}
	return "?"
}
