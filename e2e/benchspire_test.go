//go:build e2e && benchspire

package e2e

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"
	"unsafe"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"golang.org/x/sys/unix"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// benchWindow is how long TestBenchSPIRE watches rotations; with the
// suite's 20 s X.509 TTL the agent rotates about every 5 s.
var benchWindow = flag.Duration("bench-window", 2*time.Minute, "TestBenchSPIRE: how long to watch rotations")

// TestBenchSPIRE is the side-by-side benchmark (make bench-spire): one real
// SPIRE agent, one entry for this uid, and
//   - an Envoy-behaving SotW client on the agent's own SDS (the Workload
//     API socket),
//   - the bridge, as a process of the same uid, so it gets the same SVID,
//   - an Envoy-behaving SotW client on the bridge's SDS socket,
//   - an inotify watch on the bridge's credential folder.
//
// For every rotation it takes the moment SPIRE's own SDS client got the new
// leaf as time zero and reports how much later the bridge's SDS client and
// the folder (..data renamed onto the new generation) had it: median, p90,
// max and missed rotations. It also reports CPU seconds and RSS of
// spire-agent and of the bridge over the same window, and, measured in the
// same run, the machine's floors: a gRPC round trip on the bridge's socket
// and an fsync'd rename in the folder's file system. Everything is printed
// as ratios too, since absolute times depend on a noisy machine.
//
// It fails only if the harness cannot run or if the bridge misses every
// rotation; the figures are for the reader, not assertions.
func TestBenchSPIRE(t *testing.T) {
	requireBridge(t)
	work := newWorkDir(t)
	s := startSPIRE(t, work, spireEntry{Path: "/bench", Selector: fmt.Sprintf("unix:uid:%d", os.Getuid())})

	folder := filepath.Join(work, "creds")
	mkdirOwned(t, folder, 0o755, nil)
	socket := filepath.Join(work, "sds.sock")
	fw := watchFolder(t, folder)
	b := startBridge(t, work, "bench", bridgeConfig{
		WorkloadAPI: bridgeWorkloadAPI{Address: s.WorkloadAPIAddr(), FirstUpdateTimeout: "60s"},
		SDS:         &bridgeSDS{Socket: socket},
		Files:       []bridgeFolder{{Dir: folder, Layout: layoutHelper}},
	}, nil)
	waitForSocket(t, b, socket)

	spire := newLeafClient(t, "spire", dialSDS(t, s.AgentSocket))
	bridgeConn := dialSDS(t, socket)
	ours := newLeafClient(t, "bridge", bridgeConn)
	// What the bridge itself receives: a go-spiffe watcher on the same
	// agent. Its lag is the agent's, not the bridge's.
	input := watchWorkloadAPI(t, s.WorkloadAPIAddr())
	// Both clients have their first SVID before the window opens: only
	// rotations pushed while everything watches are counted.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	for _, c := range []*leafClient{spire, ours} {
		if err := c.waitFirst(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := fw.waitFirst(ctx, "the folder was never swapped"); err != nil {
		t.Fatal(err)
	}
	if err := input.waitFirst(ctx, "the Workload API watcher got no SVID"); err != nil {
		t.Fatal(err)
	}

	agentPID, bridgePID := s.agent.PID(), b.proc.PID()
	agentBefore, bridgeBefore := readProcStat(t, agentPID), readProcStat(t, bridgePID)
	opened := time.Now()
	t.Logf("watching rotations for %s (agent pid %d, bridge pid %d)", *benchWindow, agentPID, bridgePID)
	time.Sleep(*benchWindow)
	closed := time.Now()
	agentAfter, bridgeAfter := readProcStat(t, agentPID), readProcStat(t, bridgePID)
	// A rotation SPIRE pushed just before the window closed still gets its
	// chance to arrive.
	time.Sleep(2 * time.Second)
	b.Running(t)

	floorRPC := grpcRoundTrip(t, bridgeConn, 2000)
	floorFsync := fsyncRename(t, filepath.Join(work, "fsync"), 200)

	rotations := spire.seenBetween(opened, closed)
	if len(rotations) == 0 {
		t.Fatalf("SPIRE pushed no rotation in %s", *benchWindow)
	}
	sdsLag, sdsMissed := lags(rotations, ours.seen())
	inputLag, inputMissed := lags(rotations, input.seen())
	folderLag, folderMissed := lags(rotations, fw.seen())
	if sdsMissed == len(rotations) || folderMissed == len(rotations) {
		t.Errorf("the bridge missed every rotation (SDS missed %d, folder missed %d of %d)", sdsMissed, folderMissed, len(rotations))
	}

	window := closed.Sub(opened)
	perMin := func(d time.Duration) float64 { return d.Seconds() * float64(time.Minute) / float64(window) }
	out := &strings.Builder{}
	fmt.Fprintf(out, "\nsds-bridge next to SPIRE Agent %s's own SDS: %d rotations in %s (X.509 TTL %d s)\n",
		spireVersion, len(rotations), window.Round(time.Second), x509SVIDTTL)
	fmt.Fprintf(out, "time zero is when SPIRE's own SDS client got the new leaf; floors measured in this run:\n")
	fmt.Fprintf(out, "  gRPC round trip on the bridge's socket (grpc.health.v1 Check): %s\n", floorRPC.Round(time.Microsecond))
	fmt.Fprintf(out, "  fsync'd rename of a small file in the folder's file system:     %s\n\n", floorFsync.Round(time.Microsecond))
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "after SPIRE's push\tmedian\tp90\tmax\tmissed\tmedian / floor\t")
	row := func(name string, l []time.Duration, missed int, floor time.Duration) {
		if len(l) == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t%d/%d\t-\t\n", name, missed, len(rotations))
			return
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%.1f× %s\t\n", name, fmtLag(quantile(l, 0.5)), fmtLag(quantile(l, 0.9)),
			fmtLag(l[len(l)-1]), missed, len(rotations), float64(quantile(l, 0.5))/float64(floor),
			map[bool]string{true: "RTT", false: "fsync"}[floor == floorRPC])
	}
	row("go-spiffe watcher (bridge's input)", inputLag, inputMissed, floorRPC)
	row("bridge SDS client", sdsLag, sdsMissed, floorRPC)
	row("bridge folder (..data swapped)", folderLag, folderMissed, floorFsync)
	tw.Flush()
	fmt.Fprintln(out)
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "over the window\tCPU s/min\tRSS MiB\tpeak RSS MiB\t")
	agentCPU, bridgeCPU := agentAfter.cpu-agentBefore.cpu, bridgeAfter.cpu-bridgeBefore.cpu
	fmt.Fprintf(tw, "spire-agent\t%.3f\t%.1f\t%.1f\t\n", perMin(agentCPU), mib(agentAfter.rss), mib(agentAfter.hwm))
	fmt.Fprintf(tw, "sds-bridge\t%.3f\t%.1f\t%.1f\t\n", perMin(bridgeCPU), mib(bridgeAfter.rss), mib(bridgeAfter.hwm))
	fmt.Fprintf(tw, "bridge / agent\t%s\t%.2f\t%.2f\t\n", ratio(bridgeCPU, agentCPU),
		float64(bridgeAfter.rss)/float64(agentAfter.rss), float64(bridgeAfter.hwm)/float64(agentAfter.hwm))
	tw.Flush()
	fmt.Fprintf(out, "(CPU is utime+stime from /proc, in 10 ms ticks; the agent's includes its syncs with the server and serving\n"+
		" both the bridge's Workload API stream and the SDS client; the bridge's, its SDS client and one fsync'd folder swap per rotation.)\n")
	fmt.Print(out.String())
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

// leafClient is an Envoy-behaving SotW client on "default" and "ALL": it
// ACKs every response with its version and nonce (NACKs what it cannot
// load, keeping the last accepted version) and records when it first held
// each default leaf, by serial. The time is taken as the response
// arrives, before it is decoded.
type leafClient struct {
	name   string
	stream grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
	cancel context.CancelFunc
	done   chan struct{}
	serialTimes
}

func newLeafClient(t testing.TB, name string, conn *grpc.ClientConn) *leafClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
	if err != nil {
		cancel()
		t.Fatalf("e2e: %s: open SDS stream: %v", name, err)
	}
	c := &leafClient{name: name, stream: stream, cancel: cancel, done: make(chan struct{}), serialTimes: newSerialTimes()}
	go c.run()
	t.Cleanup(func() {
		c.cancel()
		<-c.done
	})
	return c
}

func (c *leafClient) run() {
	defer close(c.done)
	names := []string{sdsDefault, sdsAll}
	req := &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "bench-" + c.name, Cluster: "bench"},
		ResourceNames: names, TypeUrl: resourcev3.SecretType}
	accepted := ""
	for {
		if err := c.stream.Send(req); err != nil {
			c.fail(err)
			return
		}
		resp, err := c.stream.Recv()
		at := time.Now()
		if err != nil {
			c.fail(err)
			return
		}
		serial, err := defaultLeafSerial(resp)
		req = &discoveryv3.DiscoveryRequest{ResourceNames: names, TypeUrl: resourcev3.SecretType, ResponseNonce: resp.GetNonce()}
		if err != nil {
			req.VersionInfo = accepted
			req.ErrorDetail = statusDetail(err)
			continue
		}
		accepted = resp.GetVersionInfo()
		req.VersionInfo = accepted
		if serial == "" {
			continue // this response did not carry default
		}
		c.record(serial, at)
	}
}

// defaultLeafSerial is the leaf serial of the "default" secret in resp ("" when
// resp does not carry it), after the checks Envoy makes before using it.
func defaultLeafSerial(resp *discoveryv3.DiscoveryResponse) (string, error) {
	for _, a := range resp.GetResources() {
		s := &tlsv3.Secret{}
		if err := a.UnmarshalTo(s); err != nil {
			return "", err
		}
		if err := s.ValidateAll(); err != nil {
			return "", err
		}
		if s.GetName() != sdsDefault {
			continue
		}
		leaf, err := leafOf(s)
		if err != nil {
			return "", err
		}
		return leaf.SerialNumber.String(), nil
	}
	return "", nil
}

func (c *leafClient) waitFirst(ctx context.Context) error {
	select {
	case <-c.first:
		return nil
	case <-c.done:
		c.mu.Lock()
		defer c.mu.Unlock()
		return fmt.Errorf("e2e: %s SDS stream ended: %v", c.name, c.err)
	case <-ctx.Done():
		return fmt.Errorf("e2e: %s SDS client got no SVID: %w", c.name, ctx.Err())
	}
}

// seenBetween is the serials first seen within [from, to].
func (c *leafClient) seenBetween(from, to time.Time) map[string]time.Time {
	out := map[string]time.Time{}
	for k, v := range c.seen() {
		if !v.Before(from) && !v.After(to) {
			out[k] = v
		}
	}
	return out
}

// serialTimes records when each leaf serial was first seen by one watcher.
type serialTimes struct {
	first chan struct{} // closed at the first serial

	mu      sync.Mutex
	serials map[string]time.Time
	err     error
}

func newSerialTimes() serialTimes {
	return serialTimes{first: make(chan struct{}), serials: map[string]time.Time{}}
}

func (s *serialTimes) record(serial string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.serials[serial]; !ok {
		if len(s.serials) == 0 {
			close(s.first)
		}
		s.serials[serial] = at
	}
}

// fail keeps the first error.
func (s *serialTimes) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

func (s *serialTimes) waitFirst(ctx context.Context, what string) error {
	select {
	case <-s.first:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		defer s.mu.Unlock()
		return fmt.Errorf("e2e: %s: %w (watch error: %v)", what, ctx.Err(), s.err)
	}
}

func (s *serialTimes) seen() map[string]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]time.Time, len(s.serials))
	for k, v := range s.serials {
		out[k] = v
	}
	return out
}

// folderWatch records, from inotify, when ..data was renamed onto a
// generation holding each leaf serial.
type folderWatch struct {
	dir  string
	f    *os.File
	done chan struct{}
	serialTimes
}

func watchFolder(t testing.TB, dir string) *folderWatch {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatalf("e2e: inotify: %v", err)
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_MOVED_TO); err != nil {
		unix.Close(fd)
		t.Fatalf("e2e: inotify watch %s: %v", dir, err)
	}
	// A non-blocking descriptor in an *os.File waits in Go's poller, and
	// Close wakes the reader.
	w := &folderWatch{dir: dir, f: os.NewFile(uintptr(fd), "inotify"), done: make(chan struct{}),
		serialTimes: newSerialTimes()}
	go w.run()
	t.Cleanup(func() {
		w.f.Close()
		<-w.done
	})
	return w
}

func (w *folderWatch) run() {
	defer close(w.done)
	buf := make([]byte, 64<<10)
	for {
		n, err := w.f.Read(buf)
		at := time.Now()
		if err != nil {
			if !errors.Is(err, os.ErrClosed) && !errors.Is(err, io.EOF) {
				w.fail(err)
			}
			return
		}
		swapped := false
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+int(ev.Len)]), "\x00")
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if ev.Mask&unix.IN_Q_OVERFLOW != 0 {
				w.fail(errors.New("inotify queue overflow"))
			}
			swapped = swapped || name == "..data"
		}
		if !swapped {
			continue
		}
		// ..data names the generation; its certificate file is complete
		// and fsynced before the rename.
		certs, err := parseCertsFile(filepath.Join(w.dir, "..data", helperCert))
		if err != nil {
			w.fail(err)
			continue
		}
		w.record(certs[0].SerialNumber.String(), at)
	}
}

func (w *folderWatch) fail(err error) {
	w.serialTimes.fail(fmt.Errorf("e2e: folder watch: %w", err))
}

// procStat is what /proc says about a process.
type procStat struct {
	cpu      time.Duration // utime + stime
	rss, hwm int64         // VmRSS, VmHWM in bytes
}

// clockTick is USER_HZ, the unit of utime and stime; 100 on every Linux
// architecture Go supports.
const clockTick = 100

func readProcStat(t testing.TB, pid int) procStat {
	t.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatalf("e2e: %v", err)
	}
	// The command name may hold spaces; the fields after it do not.
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatalf("e2e: /proc/%d/stat: %v", pid, err)
	}
	st := procStat{cpu: time.Duration(utime+stime) * time.Second / clockTick}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("e2e: %v", err)
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		key, v, _ := strings.Cut(line, ":")
		if key != "VmRSS" && key != "VmHWM" {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			t.Fatalf("e2e: /proc/%d/status %s: %v", pid, key, err)
		}
		if key == "VmRSS" {
			st.rss = kb << 10
		} else {
			st.hwm = kb << 10
		}
	}
	return st
}

// grpcRoundTrip is the median of n grpc.health.v1 Checks on conn.
func grpcRoundTrip(t testing.TB, conn *grpc.ClientConn, n int) time.Duration {
	t.Helper()
	client := healthpb.NewHealthClient(conn)
	times := make([]time.Duration, 0, n)
	for range n {
		start := time.Now()
		if _, err := client.Check(t.Context(), &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("e2e: health check: %v", err)
		}
		times = append(times, time.Since(start))
	}
	slices.Sort(times)
	return quantile(times, 0.5)
}

// fsyncRename is the median of n durable replacements of a small file in
// dir: write, fsync, rename over the target, fsync the directory.
func fsyncRename(t testing.TB, dir string, n int) time.Duration {
	t.Helper()
	mkdirOwned(t, dir, 0o755, nil)
	data := make([]byte, 1024)
	target := filepath.Join(dir, "target")
	times := make([]time.Duration, 0, n)
	for i := range n {
		start := time.Now()
		tmp := filepath.Join(dir, fmt.Sprintf("tmp-%d", i))
		if err := writeSynced(tmp, data); err != nil {
			t.Fatalf("e2e: %v", err)
		}
		if err := os.Rename(tmp, target); err != nil {
			t.Fatalf("e2e: %v", err)
		}
		if err := syncPath(dir); err != nil {
			t.Fatalf("e2e: %v", err)
		}
		times = append(times, time.Since(start))
	}
	slices.Sort(times)
	return quantile(times, 0.5)
}

func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncPath(path string) error {
	d, err := os.Open(path)
	if err != nil {
		return err
	}
	serr := d.Sync()
	if cerr := d.Close(); serr == nil {
		serr = cerr
	}
	return serr
}

// statusDetail is the error_detail of a NACK.
func statusDetail(err error) *statuspb.Status {
	return &statuspb.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
}

// apiWatch records when a go-spiffe X509Context watcher on the Workload API
// first had each default leaf: what the bridge receives, as early as any
// Workload API client can.
type apiWatch struct {
	done chan struct{}
	serialTimes
}

func watchWorkloadAPI(t testing.TB, addr string) *apiWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(addr))
	if err != nil {
		cancel()
		t.Fatalf("e2e: Workload API client: %v", err)
	}
	w := &apiWatch{done: make(chan struct{}), serialTimes: newSerialTimes()}
	go func() {
		defer close(w.done)
		w.fail(client.WatchX509Context(ctx, w))
	}()
	t.Cleanup(func() {
		cancel()
		<-w.done
		_ = client.Close()
	})
	return w
}

func (w *apiWatch) OnX509ContextUpdate(xc *workloadapi.X509Context) {
	at := time.Now()
	w.record(xc.DefaultSVID().Certificates[0].SerialNumber.String(), at)
}

func (w *apiWatch) OnX509ContextWatchError(error) {}
