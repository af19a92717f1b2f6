package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/sds-bridge/sds-bridge/admin"
	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// silentServer accepts TCP connections and never answers, as a
// PostgreSQL that hangs does; it holds every connection until the test
// ends.
func silentServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// TestAHungPostgreSQLNeverLeavesExpiredCertificatesOnDisk (issue 19,
// fault 1) runs the bridge binary with 2 s SVIDs and a postgres reload
// action against a server that accepts and never answers (10 s timeout,
// 3 attempts). The folder follows every rotation anyway: each read finds
// a valid, unexpired set, the generation on disk keeps rising, /status
// shows the hung action running, and `check` passes at the end. Before,
// the folder stayed on generation 2 for 30 s, expired. The test logs the
// swap lag behind rotation it measured (first seen on disk minus the
// SVID's issue time).
func TestAHungPostgreSQLNeverLeavesExpiredCertificatesOnDisk(t *testing.T) {
	t.Parallel()
	const ttl = 2 * time.Second
	bin, certs, admin, stderr := startWithHungPostgres(t, ttl)

	const generations = 12
	seen := map[uint64]time.Time{}
	var worst time.Duration
	var sawRunning bool
	deadline := time.Now().Add(2 * testkit.Timeout)
	for last := uint64(0); last < generations; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the folder reached generation %d only, in %s", last, 2*testkit.Timeout)
		}
		m, err := filesink.Inspect(filesink.InspectConfig{Dir: certs})
		if err != nil {
			if last > 0 {
				t.Fatalf("after generation %d the folder is not usable: %v", last, err)
			}
			continue // not written yet
		}
		if _, ok := seen[m.Generation]; !ok && m.Generation > 0 {
			seen[m.Generation] = time.Now()
			if lag := time.Since(m.NotAfter.Add(-ttl)); m.Generation > 1 {
				worst = max(worst, lag)
			}
			last = max(last, m.Generation)
		}
		if !sawRunning && last > 2 {
			sawRunning = postgresRunning(t, admin)
		}
	}
	if !sawRunning {
		t.Error("/status never showed the hung postgres action running")
	}
	if out, err := exec.Command(bin, "check", "--dir", certs).CombinedOutput(); err != nil {
		t.Errorf("check: %v\n%s", err, out)
	}
	swapped, lags := swapLags(stderr.String())
	var worstLag time.Duration
	for _, l := range lags {
		worstLag = max(worstLag, l)
	}
	t.Logf("PostgreSQL hung: %d generations seen on disk by polling, %d swapped; swap lag behind rotation (bridge log: swapped − received) worst %s over %d swaps; worst SVID age when first seen on disk %s (second-granular NotAfter)",
		len(seen), swapped, worstLag, len(lags), worst.Round(time.Millisecond))
}

var (
	receivedLine = regexp.MustCompile(`time=(\S+) level=INFO msg=rotation .*?generation=(\d+) `)
	swappedLine  = regexp.MustCompile(`time=(\S+) level=INFO msg="folder: swapped in new generation" .*? generation=(\d+) `)
)

// swapLags reads, from the bridge's log, how long after its arrival each
// swapped generation was swapped in.
func swapLags(log string) (swapped int, lags []time.Duration) {
	received := map[string]time.Time{}
	for _, m := range receivedLine.FindAllStringSubmatch(log, -1) {
		if at, err := time.Parse(time.RFC3339Nano, m[1]); err == nil {
			received[m[2]] = at
		}
	}
	for _, m := range swappedLine.FindAllStringSubmatch(log, -1) {
		swapped++
		at, err := time.Parse(time.RFC3339Nano, m[1])
		if r, ok := received[m[2]]; ok && err == nil {
			lags = append(lags, at.Sub(r))
		}
	}
	return swapped, lags
}

// startWithHungPostgres starts the bridge binary in dev mode with SVIDs of
// ttl and one folder whose postgres action meets a server that never
// answers; it returns the binary, the folder, the admin address and the
// bridge's log.
func startWithHungPostgres(t *testing.T, ttl time.Duration) (bin, certs, admin string, stderr *testkit.LogBuffer) {
	t.Helper()
	bin = buildBridge(t)
	work := testkit.ShortDir(t)
	certs = filepath.Join(work, "certs")
	admin = freeAddr(t)
	cfg := filepath.Join(work, "bridge.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`
sds:
  socket: %s
files:
  - dir: %s
    on_rotate:
      - postgres:
          dsn: "postgres://bridge@%s/postgres?sslmode=disable"
admin:
  listen: %s
`, filepath.Join(work, "sds.sock"), certs, silentServer(t), admin)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "dev", "--config", cfg, "--svid-ttl", ttl.String())
	cmd.Dir = work // dev keeps its Workload API socket under ./sds-bridge-dev
	stderr = &testkit.LogBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("bridge log:\n%s", stderr)
		}
	})
	return bin, certs, admin, stderr
}

// postgresRunning reports whether /status shows the postgres action
// running for a generation while a newer one is on disk or pending.
func postgresRunning(t *testing.T, addr string) bool {
	t.Helper()
	code, body := testkit.Get(t, "http://"+addr+"/status")
	if code != 200 {
		return false
	}
	var st admin.Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("/status: %v", err)
	}
	for _, f := range st.Folders {
		for _, a := range f.Actions {
			if a.Running && f.Material != nil && f.Material.Generation > a.RunningGeneration {
				return true
			}
		}
	}
	return false
}

// freeAddr is a loopback address no one listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
