package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// startFloodTarget runs the real binary in dev mode with an SDS socket and
// an admin port, and returns them once it serves a generation.
func startFloodTarget(t *testing.T) (bridge *bridgeProc, socket, adminURL string) {
	t.Helper()
	bin := buildBridge(t)
	work := testkit.ShortDir(t)
	socket = filepath.Join(work, "sds.sock")
	bridge = startBridgeProc(t, bin, work, "dev", "--svid-ttl", "1h", "--dir", filepath.Join(work, "certs"),
		"--sds-socket", socket, "--admin", "127.0.0.1:0")
	testkit.Eventually(t, "the bridge serving", func() bool {
		m := bridgeAdminAddr.FindStringSubmatch(bridge.stderr.String())
		if m == nil || !strings.Contains(bridge.stderr.String(), "SDS: serving secrets") {
			return false
		}
		adminURL = "http://" + m[1]
		return true
	})
	return bridge, socket, adminURL
}

// procField reads a field of /proc/<pid>/status, in kB for sizes.
func procField(t *testing.T, pid int, field string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// metric reads one unlabelled sample from the bridge's /metrics.
func metric(t *testing.T, adminURL, name string) float64 {
	t.Helper()
	_, body := testkit.Get(t, adminURL+"/metrics")
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	t.Fatalf("no %s in /metrics", name)
	return 0
}

// TestAnAllowedPeersFloodsLeaveTheBridgeBounded runs the real binary (dev)
// and floods its SDS socket as an allowed peer (root), as issue 19 did:
// 80 streams of 131,072 names each on one connection, then 20,000 streams
// of one name on one connection. Each too-large subscription is refused
// with ResourceExhausted (by gRPC, from its length: over 1 MiB), one
// connection holds at most 1,024 streams, and
// the bridge's resident memory stays under 100 MB (it went from 52 MB to
// 1.65 GB, and to 233 MB with 14,373 goroutines).
func TestAnAllowedPeersFloodsLeaveTheBridgeBounded(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test is an allowed peer of a bridge running as root, and must run as root (as CI does)")
	}
	bridge, socket, adminURL := startFloodTarget(t)
	pid := bridge.cmd.Process.Pid
	base := procField(t, pid, "VmRSS")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	dialSDS := func() secretv3.SecretDiscoveryServiceClient {
		conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return secretv3.NewSecretDiscoveryServiceClient(conn)
	}

	refused := floodNames(ctx, dialSDS(), 80, 131072)
	afterNames := procField(t, pid, "VmRSS")
	t.Logf("80 streams × 131,072 names: %d refused; bridge RSS %d MB → %d MB", refused, base>>10, afterNames>>10)
	if refused != 80 {
		t.Errorf("%d of 80 oversized subscriptions refused", refused)
	}

	client := dialSDS()
	var wg sync.WaitGroup
	for range 20000 {
		wg.Go(func() {
			st, err := client.StreamSecrets(ctx) // waits for a place once 1,024 are open
			if err != nil {
				return
			}
			_ = st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.SecretType, ResourceNames: []string{"default"}})
			_, _ = st.Recv()
			<-ctx.Done()
		})
	}
	testkit.Eventually(t, "1,024 streams open", func() bool { return metric(t, adminURL, "sds_bridge_sds_streams_open") >= 1024 })
	rss := procField(t, pid, "VmRSS")
	open := metric(t, adminURL, "sds_bridge_sds_streams_open")
	goroutines := metric(t, adminURL, "go_goroutines")
	fds := testkit.OpenFDs(t, pid)
	t.Logf("20,000 streams asked for on one connection: %.0f open, bridge RSS %d MB, %.0f goroutines, %d descriptors",
		open, rss>>10, goroutines, fds)
	if open > 1024 {
		t.Errorf("%.0f streams open on one connection, want at most 1,024", open)
	}
	if max(afterNames, rss) > 100<<10 {
		t.Errorf("bridge RSS reached %d MB, want under 100 MB", max(afterNames, rss)>>10)
	}
	cancel()
	wg.Wait()
}

// floodNames opens streams on client that each ask for names names at
// once, and returns how many were refused with ResourceExhausted.
func floodNames(ctx context.Context, client secretv3.SecretDiscoveryServiceClient, streams, names int) int64 {
	list := make([]string, names)
	for i := range list {
		list[i] = fmt.Sprintf("name-%06d", i)
	}
	var refused atomic.Int64
	var wg sync.WaitGroup
	for range streams {
		wg.Go(func() {
			st, err := client.StreamSecrets(ctx)
			if err != nil {
				return
			}
			_ = st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.SecretType, ResourceNames: list})
			if _, err := st.Recv(); status.Code(err) == codes.ResourceExhausted {
				refused.Add(1)
			}
		})
	}
	wg.Wait()
	return refused.Load()
}

// TestProbesAnswerWhileASlowlorisFloodsTheRealBridge runs the real binary
// (dev) with 128 clients (twice admin.max_connections) sending half a
// request to its admin port and reconnecting whenever they are closed
// (issue 19: 64 of them failed /livez 29 times of 30); every one of 30
// /livez and 30 /readyz probes is answered.
func TestProbesAnswerWhileASlowlorisFloodsTheRealBridge(t *testing.T) {
	bridge, _, adminURL := startFloodTarget(t)
	// Ready before the flood: startFloodTarget waits for SDS, and the
	// folder's first swap may come after it (a 503 from /readyz is then
	// the truth, not a probe left unanswered).
	testkit.Eventually(t, "/readyz 200", func() bool {
		code, _ := testkit.Get(t, adminURL+"/readyz")
		return code == http.StatusOK
	})
	addr := strings.TrimPrefix(adminURL, "http://")
	attack, stop := context.WithCancel(t.Context())
	var made atomic.Int64
	var wg sync.WaitGroup
	for range 128 {
		wg.Go(func() {
			for attack.Err() == nil {
				c, err := (&net.Dialer{}).DialContext(attack, "tcp", addr)
				if err != nil {
					continue
				}
				made.Add(1)
				done := context.AfterFunc(attack, func() { c.Close() })
				if _, err := io.WriteString(c, "GET /status HTTP/1.1\r\nHost: bridge\r\nX-Slow: "); err == nil {
					_, _ = io.Copy(io.Discard, c)
				}
				done()
				c.Close()
			}
		})
	}
	defer func() {
		stop()
		wg.Wait()
	}()
	testkit.Eventually(t, "the slowloris holding every place", func() bool {
		return strings.Contains(bridge.stderr.String(), "admin endpoint: connections closed at once")
	})
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: testkit.Timeout}
	answered := map[string]int{}
	for i := range 60 {
		path := []string{"/livez", "/readyz"}[i%2]
		resp, err := client.Get(adminURL + path)
		if err != nil {
			t.Errorf("probe %d of %s: %v", i/2+1, path, err)
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("probe %d of %s: %s", i/2+1, path, resp.Status)
			continue
		}
		answered[path]++
	}
	t.Logf("answered %d/30 /livez and %d/30 /readyz probes while 128 slowloris clients made %d connections; bridge holds %d descriptors",
		answered["/livez"], answered["/readyz"], made.Load(), testkit.OpenFDs(t, bridge.cmd.Process.Pid))
}
