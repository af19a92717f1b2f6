package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sds-bridge/sds-bridge/internal/devapi"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// idleWindow is how long BenchmarkIdle watches the bridge doing nothing.
var idleWindow = flag.Duration("idle-window", time.Minute, "BenchmarkIdle: how long to watch the idle bridge")

// benchTimeout bounds every wait of the benchmarks against hangs.
const benchTimeout = 30 * time.Second

// helperNames are the stable names of a spiffe-helper folder: the folder
// is ready once ..data and all of them are in place.
var helperNames = []string{"..data", "svid.pem", "svid_key.pem", "svid_bundle.pem"}

// BenchmarkStartup measures `sds-bridge run` from process start until it is
// ready (ns/op): its credential folder is swapped in (..data and the stable
// names, seen with inotify) and an SDS FetchSecrets answers with the
// secrets. The Workload API is a devapi.Server in this process that holds
// an SVID, so it answers at once. Also reported: from start until the
// bridge's Workload API stream is open (start-to-wlapi-ns: exec, Go runtime
// and package init, config) and from then until ready
// (wlapi-to-ready-ns: first update, validation, both sinks).
func BenchmarkStartup(b *testing.B) {
	bin := buildBridge(b)
	wl := newRotatingAPI(b) // not rotated: it keeps serving its first 1 h SVID
	var toWL, toReady time.Duration
	for b.Loop() {
		b.StopTimer()
		dir := testkit.ShortDir(b)
		folder, socket := filepath.Join(dir, "certs"), filepath.Join(dir, "sds.sock")
		if err := os.Mkdir(folder, 0o755); err != nil {
			b.Fatal(err)
		}
		w := newDirWatch(b, dir, folder)
		wlOpen := make(chan time.Time, 1)
		ctx, cancel := context.WithTimeout(context.Background(), benchTimeout)
		go func() {
			if wl.WaitOpenStreams(ctx, 1) == nil {
				wlOpen <- time.Now()
			}
			close(wlOpen)
		}()
		cmd := bridgeCommand(b, bin, "run", "--workload-api", wl.Address(), "--dir", folder,
			"--sds-socket", socket, "--admin", "", "--log-level", "warn")
		b.StartTimer()

		start := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		ready := waitReady(b, w, dir, folder, socket)

		b.StopTimer()
		opened, ok := <-wlOpen
		cancel()
		if !ok {
			b.Fatal("the bridge never opened a Workload API stream")
		}
		toWL += opened.Sub(start)
		toReady += ready.Sub(opened)
		stopBridge(b, cmd)
		w.close()
		ctx, cancel = context.WithTimeout(context.Background(), benchTimeout)
		if err := wl.WaitOpenStreams(ctx, 0); err != nil {
			b.Fatal(err)
		}
		cancel()
		b.StartTimer()
	}
	b.ReportMetric(float64(toWL.Nanoseconds())/float64(b.N), "start-to-wlapi-ns")
	b.ReportMetric(float64(toReady.Nanoseconds())/float64(b.N), "wlapi-to-ready-ns")
}

// BenchmarkIdle runs `sds-bridge run` against a Workload API that does not
// rotate (1 h SVID), with one SotW SDS stream open and ACKed and the admin
// listener on, and reads from /proc what it costs while nothing happens
// over -idle-window (default 1 min): CPU seconds (utime+stime) scaled to a
// minute, VmRSS at the end, and its anonymous part (the Go heap, stacks
// and runtime) and file part (pages of the binary mapped from the page
// cache); ready-* are the same at the start of the window, 2 s after ready.
func BenchmarkIdle(b *testing.B) {
	bin := buildBridge(b)
	wl := newRotatingAPI(b) // not rotated: it keeps serving its first 1 h SVID
	var cpu float64
	var ready, last procStatus
	for b.Loop() {
		dir := testkit.ShortDir(b)
		folder, socket := filepath.Join(dir, "certs"), filepath.Join(dir, "sds.sock")
		if err := os.Mkdir(folder, 0o755); err != nil {
			b.Fatal(err)
		}
		w := newDirWatch(b, dir, folder)
		cmd := bridgeCommand(b, bin, "run", "--workload-api", wl.Address(), "--dir", folder,
			"--sds-socket", socket, "--admin", "127.0.0.1:0", "--log-level", "warn")
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		waitReady(b, w, dir, folder, socket)
		w.close()
		closeStream := holdEnvoyStream(b, socket)
		// Let start-up settle (the first GC cycles, the ACK) before the
		// window opens.
		time.Sleep(2 * time.Second)
		before := readProc(b, cmd.Process.Pid)
		ready = before
		time.Sleep(*idleWindow)
		last = readProc(b, cmd.Process.Pid)
		cpu += (last.cpu - before.cpu).Seconds()
		closeStream()
		stopBridge(b, cmd)
	}
	b.ReportMetric(cpu/float64(b.N)*float64(time.Minute)/float64(*idleWindow), "cpu-s/min")
	b.ReportMetric(float64(last.rss)/(1<<20), "rss-MiB")
	b.ReportMetric(float64(last.rssAnon)/(1<<20), "rss-anon-MiB")
	b.ReportMetric(float64(last.rssFile)/(1<<20), "rss-file-MiB")
	b.ReportMetric(float64(ready.rss)/(1<<20), "ready-rss-MiB")
	b.ReportMetric(float64(ready.rssAnon)/(1<<20), "ready-rss-anon-MiB")
	b.ReportMetric(float64(ready.rssFile)/(1<<20), "ready-rss-file-MiB")
}

// waitReady waits, without polling, until the folder is swapped in and
// FetchSecrets answers; it returns when both were true.
func waitReady(b *testing.B, w *dirWatch, dir, folder, socket string) time.Time {
	b.Helper()
	deadline := time.Now().Add(benchTimeout)
	missing := map[string]bool{filepath.Join(dir, "sds.sock"): true}
	for _, n := range helperNames {
		missing[filepath.Join(folder, n)] = true
	}
	var folderReady time.Time
	for len(missing) > 0 {
		path, err := w.next(deadline)
		if err != nil {
			b.Fatal(err)
		}
		delete(missing, path)
		if folderReady.IsZero() && !anyIn(missing, folder) {
			folderReady = time.Now()
		}
	}
	sdsReady := fetchWhenServing(b, socket)
	return later(folderReady, sdsReady)
}

func anyIn(missing map[string]bool, dir string) bool {
	for p := range missing {
		if filepath.Dir(p) == dir {
			return true
		}
	}
	return false
}

func later(a, c time.Time) time.Time {
	if a.After(c) {
		return a
	}
	return c
}

// fetchWhenServing waits for grpc.health.v1 SERVING on the SDS socket (the
// first Update applied), then fetches default and ALL; it returns when
// the secrets arrived.
func fetchWhenServing(b *testing.B, socket string) time.Time {
	b.Helper()
	// Should a dial fail, retry quickly instead of after gRPC's default 1 s
	// backoff. MinConnectTimeout must be set with it: zero would give each
	// attempt a deadline of one backoff step.
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Microsecond, Multiplier: 2, MaxDelay: 10 * time.Millisecond},
			MinConnectTimeout: benchTimeout,
		}))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), benchTimeout)
	defer cancel()
	watch, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	if err != nil {
		b.Fatal(err)
	}
	for {
		resp, err := watch.Recv()
		if err != nil {
			b.Fatalf("health watch: %v", err)
		}
		if resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			break
		}
	}
	resp, err := secretv3.NewSecretDiscoveryServiceClient(conn).FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{
		Node: &corev3.Node{Id: "bench"}, ResourceNames: []string{"default", "ALL"}, TypeUrl: resource.SecretType,
	})
	if err != nil {
		b.Fatal(err)
	}
	if len(resp.GetResources()) != 2 {
		b.Fatalf("FetchSecrets: %d secrets, want 2", len(resp.GetResources()))
	}
	return time.Now()
}

// holdEnvoyStream opens one SotW stream, ACKs the first push and keeps the
// stream open until the returned func is called.
func holdEnvoyStream(b *testing.B, socket string) (closeStream func()) {
	b.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	closeStream = func() {
		cancel()
		conn.Close()
	}
	stream, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
	if err != nil {
		closeStream()
		b.Fatal(err)
	}
	names := []string{"default", "ALL"}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "idle-envoy"}, ResourceNames: names,
		TypeUrl: resource.SecretType}); err != nil {
		closeStream()
		b.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		closeStream()
		b.Fatal(err)
	}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{ResourceNames: names, TypeUrl: resource.SecretType,
		VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}); err != nil {
		closeStream()
		b.Fatal(err)
	}
	return closeStream
}

// bridgeCommand prepares `sds-bridge args…`, its log going to the
// benchmark's log. The process dies with the benchmark binary, and is
// killed when the benchmark ends if it still runs.
func bridgeCommand(b *testing.B, bin string, args ...string) *exec.Cmd {
	b.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stderr = benchLog{b}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	b.Cleanup(func() {
		if cmd.Process != nil && cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd
}

// benchLog writes a child's output to the benchmark's log.
type benchLog struct{ b *testing.B }

func (l benchLog) Write(p []byte) (int, error) {
	l.b.Logf("sds-bridge: %s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// stopBridge sends SIGTERM and waits for a clean exit.
func stopBridge(b *testing.B, cmd *exec.Cmd) {
	b.Helper()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		b.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		b.Fatalf("sds-bridge after SIGTERM: %v", err)
	}
}

// dirWatch reports names created in or renamed into a few directories,
// from inotify.
type dirWatch struct {
	fd   int
	dirs map[int32]string
	buf  []byte
	// queue holds paths read but not yet returned.
	queue []string
}

func newDirWatch(b *testing.B, dirs ...string) *dirWatch {
	b.Helper()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		b.Fatalf("inotify: %v", err)
	}
	w := &dirWatch{fd: fd, dirs: map[int32]string{}, buf: make([]byte, 64<<10)}
	for _, d := range dirs {
		wd, err := unix.InotifyAddWatch(fd, d, unix.IN_CREATE|unix.IN_MOVED_TO)
		if err != nil {
			unix.Close(fd)
			b.Fatalf("inotify watch %s: %v", d, err)
		}
		w.dirs[int32(wd)] = d
	}
	b.Cleanup(w.close)
	return w
}

func (w *dirWatch) close() {
	if w.fd >= 0 {
		unix.Close(w.fd)
		w.fd = -1
	}
}

// next returns the next path created or renamed into a watched directory.
func (w *dirWatch) next(deadline time.Time) (string, error) {
	for len(w.queue) == 0 {
		left := time.Until(deadline)
		if left <= 0 {
			return "", errors.New("inotify: timed out")
		}
		fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, int(left.Milliseconds())+1); err != nil && !errors.Is(err, unix.EINTR) {
			return "", fmt.Errorf("inotify: poll: %w", err)
		}
		n, err := unix.Read(w.fd, w.buf)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("inotify: read: %w", err)
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&w.buf[off]))
			nameBytes := w.buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if ev.Mask&unix.IN_Q_OVERFLOW != 0 {
				return "", errors.New("inotify: queue overflow")
			}
			name := strings.TrimRight(string(nameBytes), "\x00")
			if d, ok := w.dirs[ev.Wd]; ok && name != "" {
				w.queue = append(w.queue, filepath.Join(d, name))
			}
		}
	}
	p := w.queue[0]
	w.queue = w.queue[1:]
	return p, nil
}

// procStatus is what /proc says about a process.
type procStatus struct {
	cpu                   time.Duration // utime + stime
	rss, rssAnon, rssFile int64         // bytes
}

// clockTick is USER_HZ, the unit of utime and stime in /proc/<pid>/stat;
// 100 on every Linux architecture Go supports.
const clockTick = 100

func readProc(b *testing.B, pid int) procStatus {
	b.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The command name may hold spaces; the fields after it do not.
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	// fields[0] is field 3 (state); utime and stime are fields 14 and 15.
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		b.Fatal(err)
	}
	st := procStatus{cpu: time.Duration(utime+stime) * time.Second / clockTick}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		key, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch key {
		case "VmRSS":
			st.rss = kb << 10
		case "RssAnon":
			st.rssAnon = kb << 10
		case "RssFile":
			st.rssFile = kb << 10
		default:
			continue
		}
		if err != nil {
			b.Fatalf("/proc/%d/status %s: %v", pid, key, err)
		}
	}
	return st
}

// BenchmarkRotation measures one rotation through the bridge, in process:
// from the Workload API pushing a new SVID until an Envoy-behaving SDS
// client holds its leaf (ns/op), with and without a credential folder
// written alongside (its fsyncs compete for the two cores). "watcher" is
// the reference: the same push until a plain go-spiffe watcher has it, the
// Workload API hop that any consumer pays. The bridge's own share is the
// difference.
func BenchmarkRotation(b *testing.B) {
	b.Run("watcher", benchmarkWatcherRotation)
	b.Run("sds", func(b *testing.B) { benchmarkBridgeRotation(b, false) })
	b.Run("sds+folder", func(b *testing.B) { benchmarkBridgeRotation(b, true) })
}

// rotatingAPI is a Workload API with two 1 h SVIDs to push in turn; it
// serves the first from the start, before anyone connects.
type rotatingAPI struct {
	*devapi.Server
	resps   [2]*workload.X509SVIDResponse
	serials [2]string
}

func newRotatingAPI(b *testing.B) *rotatingAPI {
	b.Helper()
	td := spiffeid.RequireTrustDomainFromString("example.org")
	authority, err := devapi.NewCA(td, 2*time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	r := &rotatingAPI{}
	for i := range r.resps {
		svid, err := authority.Issue(spiffeid.RequireFromPath(td, "/bench"), time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		if r.resps[i], err = devapi.X509Response([]*x509svid.SVID{svid}, []*x509bundle.Bundle{authority.Bundle()}); err != nil {
			b.Fatal(err)
		}
		r.serials[i] = svid.Certificates[0].SerialNumber.String()
	}
	r.Server = devapi.NewServer(devapi.ServerConfig{SocketPath: filepath.Join(testkit.ShortDir(b), "wl.sock"),
		Logger: slog.New(slog.DiscardHandler)})
	r.SetX509(r.resps[0])
	if err := r.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(r.Stop)
	return r
}

// rotate pushes the i-th SVID (alternating) and returns its leaf serial.
func (r *rotatingAPI) rotate(i int) string {
	r.SetX509(r.resps[i%2])
	return r.serials[i%2]
}

func benchmarkWatcherRotation(b *testing.B) {
	api := newRotatingAPI(b)
	serials := make(chan string, 16)
	ctx, cancel := context.WithCancel(context.Background())
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(api.Address()))
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- client.WatchX509Context(ctx, x509Watcher(func(xc *workloadapi.X509Context) {
			serials <- xc.DefaultSVID().Certificates[0].SerialNumber.String()
		}))
	}()
	b.Cleanup(func() {
		cancel()
		<-done
		client.Close()
	})
	waitSerial(b, serials, api.serials[0])
	i := 0
	for b.Loop() {
		i++
		waitSerial(b, serials, api.rotate(i))
	}
}

// x509Watcher adapts a func to workloadapi.X509ContextWatcher.
type x509Watcher func(*workloadapi.X509Context)

func (w x509Watcher) OnX509ContextUpdate(xc *workloadapi.X509Context) { w(xc) }
func (x509Watcher) OnX509ContextWatchError(error)                     {}

func benchmarkBridgeRotation(b *testing.B, withFolder bool) {
	api := newRotatingAPI(b)
	dir := testkit.ShortDir(b)
	socket := filepath.Join(dir, "sds.sock")
	args := []string{"run", "--workload-api", api.Address(), "--sds-socket", socket, "--admin", "", "--log-level", "warn"}
	if withFolder {
		args = append(args, "--dir", filepath.Join(dir, "certs"))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, io.Discard, io.Discard) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("run: %v", err)
		}
	})
	// The socket appears once the bridge serves; gRPC's quick backoff
	// (fetchWhenServing) covers the moment before.
	fetchWhenServing(b, socket)
	serials := make(chan string, 16)
	streamDone := envoySerials(b, socket, serials)
	waitSerial(b, serials, api.serials[0])
	i := 0
	for b.Loop() {
		i++
		waitSerial(b, serials, api.rotate(i))
	}
	b.StopTimer()
	streamDone()
}

// envoySerials runs an Envoy-behaving SotW client on "default" that ACKs
// every response and sends each leaf serial on out.
func envoySerials(b *testing.B, socket string, out chan<- string) (stop func()) {
	b.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
	if err != nil {
		cancel()
		conn.Close()
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		names := []string{"default"}
		req := &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "bench"}, ResourceNames: names, TypeUrl: resource.SecretType}
		for {
			if err := stream.Send(req); err != nil {
				return
			}
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			req = &discoveryv3.DiscoveryRequest{ResourceNames: names, TypeUrl: resource.SecretType,
				VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}
			for _, a := range resp.GetResources() {
				s := &tlsv3.Secret{}
				if err := a.UnmarshalTo(s); err != nil {
					continue
				}
				chain := s.GetTlsCertificate().GetCertificateChain().GetInlineBytes()
				if block, _ := pem.Decode(chain); block != nil {
					if leaf, err := x509.ParseCertificate(block.Bytes); err == nil {
						out <- leaf.SerialNumber.String()
					}
				}
			}
		}
	}()
	return func() {
		cancel()
		<-done
		conn.Close()
	}
}

// waitSerial waits until serial arrives on serials, skipping others.
func waitSerial(b *testing.B, serials <-chan string, serial string) {
	b.Helper()
	timeout := time.NewTimer(benchTimeout)
	defer timeout.Stop()
	for {
		select {
		case got := <-serials:
			if got == serial {
				return
			}
		case <-timeout.C:
			b.Fatalf("serial %s never arrived", serial)
		}
	}
}
