//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// agentOutage is how long the agent stays away at least: long enough for
// go-spiffe's and gRPC's default backoffs to have grown to 8 s and more
// (an agent upgrade once took 27 s to be noticed).
const agentOutage = 30 * time.Second

// reconnectCap is the longest the watch waits between two attempts
// (rotation.MaxWatchBackoff, stated in the README); recoveryMargin covers
// the reconnection of the connection under it and the agent's first
// answer.
const (
	reconnectCap   = 5 * time.Second
	recoveryMargin = 2 * time.Second
)

// TestAgentBackAfter30sIsSeenWithinTheBackoffCap stops the real agent as
// an upgrade does (SIGTERM) for 30 s and starts it again at the worst
// moment, just after a failed retry of the bridge (so the whole current
// backoff stands between the agent and the bridge; any other moment would
// measure the luck of the phase): the bridge applies the agent's next SVID
// at most the stated backoff cap + 2 s after the agent serves again, logs
// "Workload API reconnected after …" with how long it was away, and
// sds_bridge_workload_api_reconnects_total counts one reconnect.
func TestAgentBackAfter30sIsSeenWithinTheBackoffCap(t *testing.T) {
	requireBridge(t)
	work := newWorkDir(t)
	s := startSPIRE(t, work, spireEntry{Path: "/backend", Selector: "unix:uid:0"})
	socket := work + "/sds.sock"
	b := startBridge(t, work, "envoy", bridgeConfig{
		WorkloadAPI: bridgeWorkloadAPI{Address: s.WorkloadAPIAddr(), FirstUpdateTimeout: "60s"},
		SDS:         &bridgeSDS{Socket: socket},
	}, nil)
	waitForSocket(t, b, socket)
	envoy := newEnvoyClient(t, dialSDS(t, socket), sdsDefault)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	if _, err := nextDefaultSerial(t, ctx, envoy, ""); err != nil {
		t.Fatal(err)
	}
	if got := bridgeMetric(t, b, "sds_bridge_workload_api_reconnects_total"); got != 0 {
		t.Fatalf("sds_bridge_workload_api_reconnects_total = %d before any outage", got)
	}

	s.agent.Stop(10 * time.Second)
	t.Logf("spire-agent stopped (SIGTERM); away for %s", agentOutage)
	time.Sleep(agentOutage)
	last, ok := defaultSerial(t, envoy.Latest().Secrets)
	if !ok {
		t.Fatal("the stream holds no default secret")
	}

	// The next failed retry: the bridge counts it as it begins its wait.
	failed := bridgeMetric(t, b, "sds_bridge_workload_api_errors_total")
	if err := poll(ctx, "the bridge's next failed retry", 20*time.Millisecond, func() error {
		if n := bridgeMetric(t, b, "sds_bridge_workload_api_errors_total"); n == failed {
			return fmt.Errorf("still %d watch errors", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	serving := firstFetch(ctx, s.WorkloadAPIAddr())
	started := time.Now()
	s.StartAgent(t, "")
	served := <-serving
	if served.IsZero() {
		t.Fatal("the agent never served this workload after its restart")
	}
	next, err := nextDefaultSerial(t, ctx, envoy, last)
	if err != nil {
		t.Fatal(err)
	}
	applied := time.Now()
	recovery := applied.Sub(served)
	t.Logf("agent started → serves an SVID: %s; → the bridge's SDS stream has it (serial %s): %s after the agent served, %s after it started",
		served.Sub(started).Round(time.Millisecond), next, recovery.Round(time.Millisecond), applied.Sub(started).Round(time.Millisecond))
	if limit := reconnectCap + recoveryMargin; recovery > limit {
		t.Errorf("the bridge applied the agent's SVID %s after the agent served it, want at most %s (cap %s + %s)", recovery, limit, reconnectCap, recoveryMargin)
	}

	logged := ""
	for _, line := range strings.Split(readFileString(b.proc.LogPath), "\n") {
		if strings.Contains(line, "Workload API reconnected after") {
			logged = line
		}
	}
	if logged == "" {
		t.Errorf("no \"Workload API reconnected after\" line in the bridge's log:\n%s", tailFile(b.proc.LogPath, 30))
	}
	t.Logf("bridge: %s", logged)
	if got := bridgeMetric(t, b, "sds_bridge_workload_api_reconnects_total"); got != 1 {
		t.Errorf("sds_bridge_workload_api_reconnects_total = %d after the agent came back, want 1", got)
	}
	b.Running(t)
}

// nextDefaultSerial waits for an SDS response whose default leaf's serial
// is not skip.
func nextDefaultSerial(t testing.TB, ctx context.Context, envoy *envoyClient, skip string) (string, error) {
	t.Helper()
	for {
		st, err := envoy.Next(ctx)
		if err != nil {
			return "", err
		}
		if st.Rejected != nil {
			return "", fmt.Errorf("Envoy would NACK version %s: %w", st.Version, st.Rejected)
		}
		if serial, ok := defaultSerial(t, st.Secrets); ok && serial != skip {
			return serial, nil
		}
	}
}

// firstFetch tries the Workload API at addr every 50 ms, each time with a
// new client (a lasting one would wait out its own backoff), and sends
// when it first answered with an X.509 context: the moment the agent
// serves this workload again, to within 50 ms. Zero if ctx ends first.
func firstFetch(ctx context.Context, addr string) <-chan time.Time {
	out := make(chan time.Time, 1)
	go func() {
		defer close(out)
		for ctx.Err() == nil {
			if fetchOnce(ctx, addr) {
				out <- time.Now()
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return out
}

func fetchOnce(ctx context.Context, addr string) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(addr))
	if err != nil {
		return false
	}
	defer client.Close()
	_, err = client.FetchX509Context(ctx)
	return err == nil
}

// bridgeMetric reads the value of an unlabelled counter from the bridge's
// /metrics.
func bridgeMetric(t testing.TB, b *bridge, name string) int {
	t.Helper()
	code, body := testkit.Get(t, "http://"+b.Cfg.Admin.Listen+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatalf("/metrics: %q: %v", line, err)
			}
			return n
		}
	}
	t.Fatalf("/metrics has no %s:\n%s", name, body)
	return 0
}
