package sds

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// benchClientsEnv makes the test binary a process full of SDS clients (see
// TestMain): "<socket> <streams>". It opens the streams, ACKs the first
// push on each, then holds them until its stdin is closed.
const benchClientsEnv = "SDS_BENCH_CLIENTS"

// BenchmarkStreamMemory measures what one open SDS stream costs the
// server: Go heap and stack in use (bytes/stream; heap-bytes/stream and
// stack-bytes/stream apart) and resident memory
// (rss-bytes/stream), after N SotW streams have received the secrets and
// are waiting for the next push, against the same figures before they
// opened (after a GC each time).
//
// clients=child opens the streams from a child process, so the figures are
// the server's alone. clients=inproc opens them from this process, so they
// include the client side too (gRPC client streams, one goroutine each,
// one connection per 100 streams): the difference is roughly what a Go
// client pays per stream. ns/op is the time to open N streams, get the
// first push on each and close them again.
func BenchmarkStreamMemory(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		for _, where := range []string{"child", "inproc"} {
			b.Run(fmt.Sprintf("clients=%s/streams=%d", where, n), func(b *testing.B) {
				benchmarkStreamMemory(b, n, where == "child")
			})
		}
	}
}

func benchmarkStreamMemory(b *testing.B, n int, child bool) {
	s := startServer(b, Config{Logger: slog.New(slog.DiscardHandler)})
	r := &rotator{t: b, ca: newCA(b, exampleTD), id: webID}
	if err := s.Apply(context.Background(), r.next()); err != nil {
		b.Fatal(err)
	}
	var heap, stack, rss float64
	for b.Loop() {
		b.StopTimer()
		before := memNow(b)
		b.StartTimer()
		var closeAll func()
		if child {
			closeAll = openStreamsInChild(b, s.cfg.SocketPath, n)
		} else {
			closeAll = openStreamsHere(b, s.cfg.SocketPath, n)
		}
		testkit.Eventually(b, "every stream waiting", func() bool { return s.NumWatches("default") == n })
		b.StopTimer()
		after := memNow(b)
		heap += float64(after.heap - before.heap)
		stack += float64(after.stack - before.stack)
		rss += float64(after.rss - before.rss)
		b.StartTimer()
		closeAll()
		testkit.Eventually(b, "every stream closed", func() bool { return s.Stats().StreamsOpen == 0 })
	}
	b.ReportMetric((heap+stack)/float64(b.N*n), "bytes/stream")
	b.ReportMetric(heap/float64(b.N*n), "heap-bytes/stream")
	b.ReportMetric(stack/float64(b.N*n), "stack-bytes/stream")
	b.ReportMetric(rss/float64(b.N*n), "rss-bytes/stream")
}

type memSample struct{ heap, stack, rss int64 }

// memNow is heap and goroutine stacks in use after a full GC, and the
// resident set.
func memNow(b *testing.B) memSample {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSample{heap: int64(ms.HeapInuse), stack: int64(ms.StackInuse), rss: rssBytes(b)}
}

// rssBytes is VmRSS of this process.
func rssBytes(b *testing.B) int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb << 10
		}
	}
	b.Fatal("no VmRSS in /proc/self/status")
	return 0
}

// openStreamsHere opens n streams from this process; closeAll ends them.
func openStreamsHere(b *testing.B, socket string, n int) (closeAll func()) {
	ctx, cancel := context.WithCancel(context.Background())
	conns, err := holdStreams(ctx, socket, n)
	if err != nil {
		cancel()
		b.Fatal(err)
	}
	return func() {
		cancel()
		for _, c := range conns {
			c.Close()
		}
	}
}

// openStreamsInChild starts the test binary as a client process holding n
// streams; closeAll closes its stdin and waits for it to exit.
func openStreamsInChild(b testing.TB, socket string, n int) (closeAll func()) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d", benchClientsEnv, socket, n))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	return func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			b.Fatalf("client process: %v: %s", err, stderr.String())
		}
	}
}

// runBenchClients is the child process of openStreamsInChild.
func runBenchClients(arg string) int {
	socket, count, _ := strings.Cut(arg, " ")
	n, err := strconv.Atoi(count)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bad", benchClientsEnv, arg)
		return 2
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conns, err := holdStreams(ctx, socket, n)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// The parent watches the server until every stream waits, then
	// closes our stdin.
	_, _ = io.Copy(io.Discard, bufio.NewReader(os.Stdin))
	return 0
}

// holdStreams opens n SotW streams, streamsPerConn per connection, each
// asking for default and ALL and ACKing the first push; it returns once
// every stream has sent its ACK. The streams stay open until ctx ends.
func holdStreams(ctx context.Context, socket string, n int) ([]*grpc.ClientConn, error) {
	var conns []*grpc.ClientConn
	errs := make(chan error, n)
	var conn *grpc.ClientConn
	for i := range n {
		if i%streamsPerConn == 0 {
			var err error
			conn, err = grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				for _, c := range conns {
					c.Close()
				}
				return nil, err
			}
			conns = append(conns, conn)
		}
		client := secretv3.NewSecretDiscoveryServiceClient(conn)
		go func() { errs <- ackFirstPush(ctx, client, i) }()
	}
	var err error
	for range n {
		err = errors.Join(err, <-errs)
	}
	if err != nil {
		for _, c := range conns {
			c.Close()
		}
		return nil, err
	}
	return conns, nil
}

func ackFirstPush(ctx context.Context, c secretv3.SecretDiscoveryServiceClient, i int) error {
	stream, err := c.StreamSecrets(ctx)
	if err != nil {
		return err
	}
	names := []string{"default", "ALL"}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: fmt.Sprintf("envoy-%d", i)},
		ResourceNames: names, TypeUrl: resource.SecretType}); err != nil {
		return err
	}
	resp, err := stream.Recv()
	if err != nil {
		return err
	}
	return stream.Send(&discoveryv3.DiscoveryRequest{ResourceNames: names, TypeUrl: resource.SecretType,
		VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()})
}

// BenchmarkUnixRoundTrip is the physical limit of any answer over the SDS
// socket on this machine, next to what FetchSecrets costs:
//   - raw: one byte echoed over a unix socket, no gRPC;
//   - grpc-health: grpc.health.v1 Check, the cheapest gRPC call the
//     server answers;
//   - fetch-secrets: FetchSecrets for default and ALL (the client decodes
//     the response; Envoy would too).
func BenchmarkUnixRoundTrip(b *testing.B) {
	b.Run("raw", benchmarkRawUnix)
	b.Run("grpc-health", func(b *testing.B) {
		s := startServer(b, Config{Logger: slog.New(slog.DiscardHandler)})
		r := &rotator{t: b, ca: newCA(b, exampleTD), id: webID}
		if err := s.Apply(context.Background(), r.next()); err != nil {
			b.Fatal(err)
		}
		client := healthpb.NewHealthClient(dial(b, s.cfg.SocketPath))
		req := &healthpb.HealthCheckRequest{}
		for b.Loop() {
			resp, err := client.Check(context.Background(), req)
			if err != nil {
				b.Fatal(err)
			}
			if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				b.Fatalf("health %s", resp.GetStatus())
			}
		}
	})
	b.Run("fetch-secrets", func(b *testing.B) {
		s := startServer(b, Config{Logger: slog.New(slog.DiscardHandler)})
		r := &rotator{t: b, ca: newCA(b, exampleTD), id: webID}
		if err := s.Apply(context.Background(), r.next()); err != nil {
			b.Fatal(err)
		}
		client := secretClient(b, s.cfg.SocketPath)
		req := &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "bench"}, ResourceNames: []string{"default", "ALL"},
			TypeUrl: resource.SecretType}
		for b.Loop() {
			resp, err := client.FetchSecrets(context.Background(), req)
			if err != nil {
				b.Fatal(err)
			}
			if len(resp.GetResources()) != 2 {
				b.Fatalf("%d secrets, want 2", len(resp.GetResources()))
			}
		}
	})
}

func benchmarkRawUnix(b *testing.B) {
	path := socketPath(b)
	l, err := net.Listen("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	b.Cleanup(wg.Wait)
	b.Cleanup(func() { l.Close() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = io.Copy(conn, conn)
	}()
	conn, err := net.Dial("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	buf := []byte{1}
	for b.Loop() {
		if _, err := conn.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(conn, buf); err != nil {
			b.Fatal(err)
		}
	}
}
