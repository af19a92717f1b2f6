//go:build e2e && benchspire

package e2e

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"text/tabwriter"
	"time"
)

var (
	// benchWindow is how long TestBenchSPIRE watches rotations; with the
	// suite's 20 s X.509 TTL the agent rotates about every 5 s.
	benchWindow = flag.Duration("bench-window", 2*time.Minute, "TestBenchSPIRE: how long to watch rotations")
	// benchBaseline, a git revision, adds the bridge built at it as the
	// "before" of every row.
	benchBaseline = flag.String("bench-baseline", "", "TestBenchSPIRE: also run the bridge built at this git revision")
	// benchTraceRotations is how many rotations each bridge is traced for
	// after the window (0: no trace).
	benchTraceRotations = flag.Int("bench-trace-rotations", 5, "TestBenchSPIRE: rotations to trace after the window")
)

// TestBenchSPIRE is the side-by-side benchmark (make bench-spire): one real
// SPIRE agent, one entry for this uid, and, all as processes of that uid
// (so they get the very same SVID):
//   - an Envoy-behaving SotW client on the agent's own SDS (the Workload
//     API socket),
//   - spiffe-helper writing its folder, watched with inotify,
//   - the bridge (and, with -bench-baseline, the bridge built at that
//     revision), each with an Envoy-behaving SotW client on its SDS socket
//     and an inotify watch on its credential folder,
//   - a go-spiffe watcher: what the bridges and the helper receive.
//
// For every rotation it takes the moment SPIRE's own SDS client got the new
// leaf as time zero and reports how much later each of the others had it:
// median, p90, max and missed rotations. It also reports CPU seconds and
// resident memory (VmRSS, RssAnon, RssFile) of every process at ready and at
// the end of the window, the machine's floors measured in the same run (a
// gRPC round trip on the bridge's socket, an fsync'd rename in the folders'
// file system), and then a runtime trace of each bridge over a few
// rotations, broken down by e2e/traceparse.
//
// It fails only if the harness cannot run or if a bridge misses every
// rotation; the figures are for the reader, not assertions.
func TestBenchSPIRE(t *testing.T) {
	requireBridge(t)
	work := newWorkDir(t)
	folders := tmpfsDir(t)
	s := startSPIRE(t, work, spireEntry{Path: "/bench", Selector: fmt.Sprintf("unix:uid:%d", os.Getuid())})

	var bridges []*benchBridge
	if *benchBaseline != "" {
		bin, commit := baselineBridge(t, *benchBaseline)
		bridges = append(bridges, startBenchBridge(t, s, work, folders, "base", "baseline "+commit, bin))
	}
	bridges = append(bridges, startBenchBridge(t, s, work, folders, "cur", "current", benchBridgeBinary(t, "..", newWorkDir(t))))
	helper := startSpiffeHelper(t, s, work, filepath.Join(folders, "helper"))
	spire := newLeafClient(t, "spire", dialSDS(t, s.AgentSocket))
	input := watchWorkloadAPI(t, s.WorkloadAPIAddr())
	waitAllFirst(t, spire, input, helper, bridges)

	procs := []*benchProc{{name: "spire-agent", pid: s.agent.PID()}, {name: "spiffe-helper", pid: helper.proc.PID()}}
	for _, b := range bridges {
		procs = append(procs, &benchProc{name: "sds-bridge " + b.label, pid: b.b.proc.PID()})
	}
	for _, p := range procs {
		p.ready = readProcStat(t, p.pid)
	}
	opened := time.Now()
	t.Logf("watching rotations for %s", *benchWindow)
	time.Sleep(*benchWindow)
	closed := time.Now()
	for _, p := range procs {
		p.end = readProcStat(t, p.pid)
	}
	// A rotation SPIRE pushed just before the window closed still gets its
	// chance to arrive.
	time.Sleep(2 * time.Second)
	for _, b := range bridges {
		b.b.Running(t)
	}

	rotations := spire.seenBetween(opened, closed)
	if len(rotations) == 0 {
		t.Fatalf("SPIRE pushed no rotation in %s", *benchWindow)
	}
	out := &strings.Builder{}
	fmt.Fprintf(out, "\nsds-bridge next to SPIRE Agent %s's own SDS and spiffe-helper %s: %d rotations in %s (X.509 TTL %d s)\n",
		spireVersion, spiffeHelperVersion, len(rotations), closed.Sub(opened).Round(time.Second), x509SVIDTTL)
	fmt.Fprintf(out, "time zero is when SPIRE's own SDS client got the new leaf; floors measured in this run:\n")
	floors := benchFloors{
		rpc:   grpcRoundTrip(t, bridges[len(bridges)-1].conn, 2000),
		fsync: fsyncRename(t, filepath.Join(folders, "fsync"), 200),
	}
	fmt.Fprintf(out, "  gRPC round trip on the bridge's socket (grpc.health.v1 Check): %s\n", floors.rpc.Round(time.Microsecond))
	fmt.Fprintf(out, "  fsync'd rename of a small file in the folders' file system (%s): %s\n\n", fsType(folders), floors.fsync.Round(time.Microsecond))
	lagTable(t, out, rotations, floors, input, helper, bridges)
	fmt.Fprintln(out)
	memTable(out, procs, closed.Sub(opened))
	fmt.Print(out.String())

	if *benchTraceRotations > 0 {
		traceBridges(t, spire, bridges, *benchTraceRotations)
	}
}

// waitAllFirst waits until every watcher has its first SVID: only
// rotations pushed while everything watches are counted.
func waitAllFirst(t testing.TB, spire *leafClient, input *apiWatch, helper *benchHelper, bridges []*benchBridge) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	waits := []func() error{
		func() error { return spire.waitFirst(ctx) },
		func() error { return input.waitFirst(ctx, "the Workload API watcher got no SVID") },
		func() error { return helper.folder.waitFirst(ctx, "spiffe-helper wrote no SVID") },
	}
	for _, b := range bridges {
		waits = append(waits, func() error { return b.sds.waitFirst(ctx) },
			func() error { return b.folder.waitFirst(ctx, b.label+": the folder was never swapped") })
	}
	for _, wait := range waits {
		if err := wait(); err != nil {
			t.Fatal(err)
		}
	}
}

// benchFloors are the machine's own costs, measured in the same run.
type benchFloors struct{ rpc, fsync time.Duration }

// lagTable prints, per watcher, how long after SPIRE's own SDS client it had
// each rotation's leaf.
func lagTable(t testing.TB, out io.Writer, rotations map[string]time.Time, floors benchFloors,
	input *apiWatch, helper *benchHelper, bridges []*benchBridge) {
	helperLag, helperMissed := lags(rotations, helper.folder.seen())
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "after SPIRE's push\tmedian\tp90\tmax\tmissed\tmedian / floor\tmedian / helper's\t")
	row := func(name string, l []time.Duration, missed int, floor time.Duration, floorName string, vsHelper bool) {
		if len(l) == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t%d/%d\t-\t-\t\n", name, missed, len(rotations))
			return
		}
		med := quantile(l, 0.5)
		helperRatio := "-"
		// A ratio to a lag at or below zero (the helper can write before
		// SPIRE's own client reads) says nothing.
		if vsHelper && len(helperLag) > 0 && quantile(helperLag, 0.5) > 0 {
			helperRatio = fmt.Sprintf("%.2f×", float64(med)/float64(quantile(helperLag, 0.5)))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%.1f× %s\t%s\t\n", name, fmtLag(med), fmtLag(quantile(l, 0.9)),
			fmtLag(l[len(l)-1]), missed, len(rotations), float64(med)/float64(floor), floorName, helperRatio)
	}
	inputLag, inputMissed := lags(rotations, input.seen())
	row("go-spiffe watcher (everyone's input)", inputLag, inputMissed, floors.rpc, "RTT", false)
	row("spiffe-helper folder (svid.pem written)", helperLag, helperMissed, floors.fsync, "fsync", false)
	for _, b := range bridges {
		sdsLag, sdsMissed := lags(rotations, b.sds.seen())
		folderLag, folderMissed := lags(rotations, b.folder.seen())
		if sdsMissed == len(rotations) || folderMissed == len(rotations) {
			t.Errorf("bridge %s missed every rotation (SDS missed %d, folder missed %d of %d)", b.label, sdsMissed, folderMissed, len(rotations))
		}
		row("bridge "+b.label+" SDS client", sdsLag, sdsMissed, floors.rpc, "RTT", false)
		row("bridge "+b.label+" folder (..data swapped)", folderLag, folderMissed, floors.fsync, "fsync", true)
	}
	tw.Flush()
}

// benchProc is one measured process: /proc at ready and at the window's end.
type benchProc struct {
	name       string
	pid        int
	ready, end procStat
}

// memTable prints CPU over the window and resident memory at ready and at
// the window's end, in MiB.
func memTable(out io.Writer, procs []*benchProc, window time.Duration) {
	perMin := func(d time.Duration) float64 { return d.Seconds() * float64(time.Minute) / float64(window) }
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "MiB, at ready → end of window\tCPU s/min\tVmRSS\tRssAnon\tRssFile\tpeak VmRSS\t")
	span := func(a, b int64) string { return fmt.Sprintf("%.1f → %.1f", mib(a), mib(b)) }
	for _, p := range procs {
		fmt.Fprintf(tw, "%s\t%.3f\t%s\t%s\t%s\t%.1f\t\n", p.name, perMin(p.end.cpu-p.ready.cpu),
			span(p.ready.mem.VmRSS, p.end.mem.VmRSS), span(p.ready.mem.RssAnon, p.end.mem.RssAnon),
			span(p.ready.mem.RssFile, p.end.mem.RssFile), mib(p.end.mem.VmHWM))
	}
	tw.Flush()
	fmt.Fprintf(out, "(CPU is utime+stime from /proc, in 10 ms ticks; the agent's includes its syncs with the server and serving\n"+
		" every Workload API stream and the SDS client. Peak VmRSS is the kernel's VmHWM. RssFile is the binary's pages,\n"+
		" shared by every copy on a node; RssAnon is what each pod pays on its own.)\n")
}

func fmtLag(d time.Duration) string {
	if d < 0 {
		return "-" + fmtLag(-d)
	}
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}

func ratio(a, b time.Duration) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", float64(a)/float64(b))
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// quantile of sorted durations, nearest rank.
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// lags is, for every rotation (serial → when SPIRE's client had it), how
// much later got had it, sorted; a serial got never saw is missed.
func lags(rotations, got map[string]time.Time) (sorted []time.Duration, missed int) {
	for serial, at := range rotations {
		t, ok := got[serial]
		if !ok {
			missed++
			continue
		}
		sorted = append(sorted, t.Sub(at))
	}
	slices.Sort(sorted)
	return sorted, missed
}
