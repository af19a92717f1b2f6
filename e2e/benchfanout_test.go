//go:build e2e && benchfanout

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sds-bridge/sds-bridge/sds"
)

var (
	fanoutStreams   = flag.String("fanout-streams", "1000,10000", "TestBenchFanout: stream counts to measure, comma-separated")
	fanoutConns     = flag.Int("fanout-conns", 50, "TestBenchFanout: gRPC connections the streams are spread over")
	fanoutWindow    = flag.Duration("fanout-window", 2*time.Minute, "TestBenchFanout: per stream count, new rounds (one client process per target) start until this much time has passed")
	fanoutRotations = flag.Int("fanout-rotations", 2, "TestBenchFanout: rotations each client process measures before it exits")
)

// fanoutTarget is one SDS server under load.
type fanoutTarget struct {
	name    string
	socket  string
	running func(testing.TB) // fails the test if the server has exited
	pid     int              // the server's process, for its memory
}

// fanoutLine is one JSON line of e2e/fanoutclient: "ready" once every
// stream holds a leaf, then "rotation" for each rotation measured.
type fanoutLine struct {
	Event   string  `json:"event"`
	Streams int     `json:"streams"`
	OpenMS  float64 `json:"open_ms"`
	Serial  string  `json:"serial"`
	Got     int     `json:"got"`
	P50US   int64   `json:"p50_us"`
	P90US   int64   `json:"p90_us"`
	MaxUS   int64   `json:"max_us"`
	CPUMS   float64 `json:"client_cpu_ms"`
}

// fanoutResult is everything measured for one target at one stream count.
type fanoutResult struct {
	opens     []time.Duration // per client process: dial until every stream held a leaf
	rotations []fanoutLine
	// perStream is, per client process in round order, the server's
	// RssAnon once every stream held a leaf minus before the client
	// dialled, over the streams: what one more stream costs the server, as
	// the kernel charges it. Only the first round meets a server that never
	// held streams; later rounds reuse what the runtime kept from earlier
	// ones, so their figures swing with the garbage collector.
	perStream []float64
}

// TestBenchFanout is the fan-out benchmark from outside (make
// bench-fanout): one rotation of a real SPIRE agent to N SDS streams over M
// connections, held by a separate client process (e2e/fanoutclient) that
// behaves like Envoy, on SPIRE Agent's own SDS (its Workload API socket)
// and on the bridge's, in the same run. BENCH_FANOUT_BASELINE=<git rev>
// adds the bridge built at that revision as a third target.
//
// The figure is each rotation's spread: how long after the first stream
// the others received the new leaf (p50, p90, max over the streams).
//
// The targets take turns: a round starts one client process per target,
// one after the other, each measuring -fanout-rotations rotations and
// exiting (its streams close) before the next starts. Two clients of
// 10,000 streams at once would fight over the two cores with each other
// and with both servers at the very moment of a rotation, and the figure
// would say more about the scheduler than about either server. Taking
// turns, each server meets its rotations with the same company: the agent
// (which also feeds the idle bridges over the Workload API), an idle other
// server, and its own client.
//
// It fails only if the harness cannot run; the figures are for the reader.
func TestBenchFanout(t *testing.T) {
	requireBridge(t)
	counts := fanoutCounts(t)
	if *fanoutConns > sds.DefaultMaxConnections {
		t.Fatalf("e2e: -fanout-conns %d is over the bridge's sds.max_connections (%d)", *fanoutConns, sds.DefaultMaxConnections)
	}
	work := newWorkDir(t)
	client := buildFanoutClient(t, work)
	s := startSPIRE(t, work, spireEntry{Path: "/fanout", Selector: fmt.Sprintf("unix:uid:%d", os.Getuid())})
	targets := []fanoutTarget{{
		name:   "SPIRE Agent " + spireVersion,
		socket: s.AgentSocket,
		pid:    s.agent.PID(),
		running: func(t testing.TB) {
			if s.agent.Exited() {
				t.Fatalf("e2e: spire-agent exited with %d", s.agent.ExitCode())
			}
		},
	}}
	targets = append(targets, startFanoutBridge(t, work, "bridge", s, bridgeBin, "sds-bridge (this checkout)"))
	if rev := os.Getenv("BENCH_FANOUT_BASELINE"); rev != "" {
		bin := buildBridgeAt(t, work, rev)
		targets = append(targets, startFanoutBridge(t, work, "baseline", s, bin, "sds-bridge at "+rev))
	}

	loadBefore := loadAverage(t)
	results := map[int]map[string]*fanoutResult{}
	for _, n := range counts {
		results[n] = map[string]*fanoutResult{}
		for _, tg := range targets {
			results[n][tg.name] = &fanoutResult{}
		}
		start := time.Now()
		for round := 1; round == 1 || time.Since(start) < *fanoutWindow; round++ {
			for _, tg := range targets {
				tg.running(t)
				r := results[n][tg.name]
				open, perStream, rotations := runFanoutClient(t, client, work, tg, n, round)
				r.opens = append(r.opens, open)
				r.perStream = append(r.perStream, perStream)
				r.rotations = append(r.rotations, rotations...)
				for _, l := range rotations {
					t.Logf("%6d streams, round %d, %-28s serial %s: %d/%d got it, p50 %s, p90 %s, max %s; client CPU %.0f ms",
						n, round, tg.name, l.Serial, l.Got, l.Streams, fmtMS(usec(l.P50US)), fmtMS(usec(l.P90US)),
						fmtMS(usec(l.MaxUS)), l.CPUMS)
				}
			}
		}
	}
	fmt.Print(fanoutTable(counts, targets, results))
	fmt.Printf("\nload average (1, 5, 15 min) at the start: %s; at the end: %s\n", loadBefore, loadAverage(t))
}

// loadAverage is the first three fields of /proc/loadavg: how busy the
// shared cores were, which moves every figure here.
func loadAverage(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		t.Fatalf("e2e: %v", err)
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

// fanoutCounts is -fanout-streams, parsed.
func fanoutCounts(t testing.TB) []int {
	t.Helper()
	var counts []int
	for f := range strings.SplitSeq(*fanoutStreams, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < *fanoutConns {
			t.Fatalf("e2e: -fanout-streams %q: %q is not a count of at least -fanout-conns (%d)", *fanoutStreams, f, *fanoutConns)
		}
		counts = append(counts, n)
	}
	return counts
}

// startFanoutBridge runs bin as `sds-bridge run` of this uid (so it gets the
// very SVIDs SPIRE's SDS serves) with SDS only.
func startFanoutBridge(t testing.TB, work, name string, s *spire, bin, label string) fanoutTarget {
	t.Helper()
	socket := filepath.Join(work, name+".sock")
	// startBridge runs the global bridgeBin; a baseline is another build
	// of the same command, started the same way.
	checkout := bridgeBin
	bridgeBin = bin
	b := startBridge(t, work, name, bridgeConfig{
		WorkloadAPI: bridgeWorkloadAPI{Address: s.WorkloadAPIAddr(), FirstUpdateTimeout: "60s"},
		SDS:         &bridgeSDS{Socket: socket},
	}, nil)
	bridgeBin = checkout
	waitForSocket(t, b, socket)
	return fanoutTarget{name: label, socket: socket, running: b.Running, pid: b.proc.PID()}
}

// buildFanoutClient builds e2e/fanoutclient (build tag benchfanout, so the
// unit suite never builds it) into work.
func buildFanoutClient(t testing.TB, work string) string {
	t.Helper()
	bin := filepath.Join(work, "fanoutclient")
	runIn(t, "..", goTool(), "build", "-tags", "benchfanout", "-o", bin, "./e2e/fanoutclient")
	return bin
}

// buildBridgeAt builds ./cmd/sds-bridge as it was at rev, from the tree
// `git archive` gives (the checkout and its branches are left alone).
func buildBridgeAt(t testing.TB, work, rev string) string {
	t.Helper()
	src, tarball := filepath.Join(work, "baseline-src"), filepath.Join(work, "baseline.tar")
	mkdirOwned(t, src, 0o755, nil)
	runIn(t, "..", "git", "archive", "--format=tar", "-o", tarball, rev)
	runIn(t, src, "tar", "-xf", tarball)
	bin := filepath.Join(work, "sds-bridge-baseline")
	runIn(t, src, goTool(), "build", "-o", bin, "./cmd/sds-bridge")
	return bin
}

// runIn runs a build step in dir with the caller's environment (cmdSpec's
// minimal one would hide the Go caches, and a cold build takes minutes).
func runIn(t testing.TB, dir, name string, args ...string) {
	t.Helper()
	start := time.Now()
	cmd := exec.CommandContext(t.Context(), name, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("e2e: %s %s (in %s): %v\n%s", name, strings.Join(args, " "), dir, err, out)
	}
	t.Logf("%s %s: %s", filepath.Base(name), strings.Join(args, " "), time.Since(start).Round(100*time.Millisecond))
}

// runFanoutClient runs one client process on tg with n streams until it has
// measured -fanout-rotations rotations, and returns how long its streams took
// to open and its rotation lines.
func runFanoutClient(t testing.TB, bin, work string, tg fanoutTarget, n, round int) (time.Duration, float64, []fanoutLine) {
	t.Helper()
	// Opening 10,000 streams takes seconds; a rotation comes every ~5 s.
	limit := 3*time.Minute + time.Duration(*fanoutRotations)*15*time.Second
	ctx, cancel := context.WithTimeout(t.Context(), limit+30*time.Second)
	defer cancel()
	logPath := filepath.Join(work, fmt.Sprintf("fanoutclient-%d-%d-%s.log", n, round, strings.Fields(tg.name)[0]))
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("e2e: %v", err)
	}
	defer logFile.Close()
	cmd := exec.CommandContext(ctx, bin, "-socket", tg.socket, "-conns", strconv.Itoa(*fanoutConns),
		"-streams", strconv.Itoa(n), "-rotations", strconv.Itoa(*fanoutRotations), "-timeout", limit.String())
	cmd.Stderr = logFile
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("e2e: %v", err)
	}
	before := readProcStat(t, tg.pid).mem.RssAnon
	if err := cmd.Start(); err != nil {
		t.Fatalf("e2e: start fanoutclient: %v", err)
	}
	var open time.Duration
	var perStream float64
	var rotations []fanoutLine
	dec := json.NewDecoder(stdout)
	for {
		var l fanoutLine
		if err := dec.Decode(&l); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Errorf("e2e: fanoutclient output: %v", err)
			}
			break
		}
		switch l.Event {
		case "ready":
			open = time.Duration(l.OpenMS * float64(time.Millisecond))
			perStream = float64(readProcStat(t, tg.pid).mem.RssAnon-before) / float64(n)
		case "rotation":
			rotations = append(rotations, l)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("e2e: fanoutclient on %s (%d streams): %v\n%s", tg.name, n, err, tailFile(logPath, 20))
	}
	return open, perStream, rotations
}

func usec(us int64) time.Duration { return time.Duration(us) * time.Microsecond }

func fmtMS(d time.Duration) string {
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

// fanoutTable is the figures as a Markdown table, ready for
// docs/benchmarks.md: per stream count and target, the median over the
// measured rotations of each rotation's p50, p90 and max spread (in
// parentheses the lowest and highest rotation), and the ratio of those
// medians to SPIRE's, the first target.
func fanoutTable(counts []int, targets []fanoutTarget, results map[int]map[string]*fanoutResult) string {
	out := &strings.Builder{}
	fmt.Fprintf(out, "\nOne rotation to N SDS streams over %d connections, spread first → last stream (same client process on every target, targets taking turns; SPIRE %s, X.509 TTL %d s)\n\n",
		*fanoutConns, spireVersion, x509SVIDTTL)
	fmt.Fprintln(out, "| streams | target | rotations (all streams got it / measured) | streams open in | server RssAnon per stream, first round (all rounds) | p50 | p90 | max | p50 / SPIRE | max / SPIRE |")
	fmt.Fprintln(out, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, n := range counts {
		spire := results[n][targets[0].name].rotations
		for _, tg := range targets {
			r := results[n][tg.name]
			complete := 0
			for _, l := range r.rotations {
				if l.Got == l.Streams {
					complete++
				}
			}
			p50 := spreadOf(r.rotations, func(l fanoutLine) int64 { return l.P50US })
			p90 := spreadOf(r.rotations, func(l fanoutLine) int64 { return l.P90US })
			mx := spreadOf(r.rotations, func(l fanoutLine) int64 { return l.MaxUS })
			fmt.Fprintf(out, "| %d | %s | %d/%d | %s | %s | %s | %s | %s | %s | %s |\n", n, tg.name, complete, len(r.rotations),
				fmtSeconds(medianOf(r.opens)), perStreamOf(r.perStream), p50, p90, mx,
				ratioOfMedians(r.rotations, spire, func(l fanoutLine) int64 { return l.P50US }),
				ratioOfMedians(r.rotations, spire, func(l fanoutLine) int64 { return l.MaxUS }))
		}
	}
	return out.String()
}

// perStreamOf is "first round (lowest–highest over the rounds)" of the
// per-stream memory, in KB: the first round is the one whose server held
// no streams before (fanoutResult.perStream).
func perStreamOf(bytes []float64) string {
	if len(bytes) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f KB (%.1f–%.1f)", bytes[0]/1000, slices.Min(bytes)/1000, slices.Max(bytes)/1000)
}

// spreadOf is "median (lowest–highest)" of one figure over the rotations.
func spreadOf(rotations []fanoutLine, figure func(fanoutLine) int64) string {
	if len(rotations) == 0 {
		return "-"
	}
	ds := figures(rotations, figure)
	return fmt.Sprintf("%s (%.1f–%.1f)", fmtMS(medianOf(ds)), float64(ds[0])/float64(time.Millisecond),
		float64(ds[len(ds)-1])/float64(time.Millisecond))
}

// figures is one figure of every rotation, sorted.
func figures(rotations []fanoutLine, figure func(fanoutLine) int64) []time.Duration {
	ds := make([]time.Duration, 0, len(rotations))
	for _, l := range rotations {
		ds = append(ds, usec(figure(l)))
	}
	slices.Sort(ds)
	return ds
}

func ratioOfMedians(rotations, spire []fanoutLine, figure func(fanoutLine) int64) string {
	if len(rotations) == 0 || len(spire) == 0 {
		return "-"
	}
	ours, theirs := medianOf(figures(rotations, figure)), medianOf(figures(spire, figure))
	if theirs == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f×", float64(ours)/float64(theirs))
}

// medianOf sorts ds and returns its median (the lower middle for an even
// count); 0 for none.
func medianOf(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[(len(ds)-1)/2]
}

func fmtSeconds(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }
