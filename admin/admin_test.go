package admin

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/goleak"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/internal/devapi"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
	"github.com/sds-bridge/sds-bridge/jwtfiles"
	"github.com/sds-bridge/sds-bridge/reload"
	"github.com/sds-bridge/sds-bridge/rotation"
	"github.com/sds-bridge/sds-bridge/sds"
)

func TestMain(m *testing.M) {
	if addr := os.Getenv(floodRoleEnv); addr != "" {
		// A child process: the attacker of TestIdleAdminClientsCannotHoldDescriptors.
		os.Exit(runFloodRole(addr))
	}
	goleak.VerifyTestMain(m)
}

var (
	td   = spiffeid.RequireTrustDomainFromString("example.org")
	dbID = spiffeid.RequireFromPath(td, "/db")
)

// syncBuffer collects log output written from many goroutines.
type syncBuffer = testkit.LogBuffer

// bridge is the real thing wired as cmd wires it: a fake Workload API (a
// real gRPC server), the rotation source, an SDS server on a unix socket,
// credential folders on disk and the admin server on a loopback port.
type bridge struct {
	t       testing.TB
	ca      *devapi.CA
	wl      *devapi.Server
	src     *rotation.Source
	sds     *sds.Server
	sdsPath string
	folders []*filesink.Folder
	admin   *Server
	url     string
	logs    *syncBuffer
	// skew moves the admin server's clock.
	skew atomic.Int64
}

type bridgeOptions struct {
	folders       []filesink.Config
	requireSDSAck bool
	minValidity   time.Duration
	// retryBackoff is rotation.Config.RetryBackoff; zero means an hour, so
	// a failed apply stays failed unless the test calls RetryNow.
	retryBackoff time.Duration
	// jwt, if set, runs a jwtfiles.Writer on the same Workload API, its
	// tokens issued with lifetime jwtTTL.
	jwt    []jwtfiles.Folder
	jwtTTL time.Duration
}

func startBridge(t testing.TB, o bridgeOptions) *bridge {
	t.Helper()
	b := &bridge{t: t, logs: &syncBuffer{}}
	log := slog.New(slog.NewTextHandler(b.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("bridge logs:\n%s", b.logs.String())
		}
	})
	var err error
	if b.ca, err = devapi.NewCA(td, 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	sock := testkit.ShortDir(t)
	b.wl = devapi.NewServer(devapi.ServerConfig{SocketPath: filepath.Join(sock, "wl.sock"), Logger: log})
	if err := b.wl.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.wl.Stop)

	b.sdsPath = filepath.Join(sock, "sds.sock")
	if b.sds, err = sds.New(sds.Config{SocketPath: b.sdsPath, Logger: log}); err != nil {
		t.Fatal(err)
	}
	sinks := []rotation.Sink{b.sds}
	for _, fc := range o.folders {
		fc.Logger = log
		f, err := filesink.New(fc)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Prepare(t.Context()); err != nil {
			t.Fatal(err)
		}
		b.folders = append(b.folders, f)
		sinks = append(sinks, f)
	}
	b.src, err = rotation.New(rotation.Config{
		Address:            b.wl.Address(),
		FirstUpdateTimeout: -1,
		Sinks:              sinks,
		RetryBackoff:       cmp.Or(o.retryBackoff, time.Hour),
		OnSinkDone:         func(st rotation.SinkStatus) { b.admin.ObserveSink(st) },
		Logger:             log,
	})
	if err != nil {
		t.Fatal(err)
	}
	var folders []Folder
	for _, f := range b.folders {
		folders = append(folders, f)
	}
	var jwtWriter *jwtfiles.Writer
	var jwt JWT
	if o.jwt != nil {
		b.wl.SetJWTTTL(o.jwtTTL)
		jwtWriter, err = jwtfiles.New(jwtfiles.Config{
			Address: b.wl.Address(), Folders: o.jwt, Logger: log,
			MinRetry: 50 * time.Millisecond, MaxRetry: 200 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		jwt = jwtWriter
	}
	b.admin, err = New(Config{
		Source:             b.src,
		SDS:                b.sds,
		Folders:            folders,
		JWT:                jwt,
		MinValidity:        o.minValidity,
		MinValidityPercent: 10,
		RequireSDSAck:      o.requireSDSAck,
		Build:              BuildInfo{Version: "test", Revision: "0123456789ab", GoVersion: "go1.26.8"},
		Logger:             log,
		Now:                func() time.Time { return time.Now().Add(time.Duration(b.skew.Load())) },
	})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.url = "http://" + l.Addr().String()

	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 4)
	go func() { errs <- b.src.Run(ctx) }()
	go func() { errs <- b.sds.Serve(ctx) }()
	go func() { errs <- b.admin.Serve(ctx, l) }()
	running := 3
	if jwtWriter != nil {
		go func() { errs <- jwtWriter.Run(ctx) }()
		running++
	}
	testkit.Eventually(t, "SDS socket", func() bool {
		_, err := os.Stat(b.sdsPath)
		return err == nil
	})
	t.Cleanup(func() {
		cancel()
		for range running {
			if err := <-errs; err != nil {
				t.Errorf("bridge component: %v", err)
			}
		}
	})
	return b
}

// push makes the fake Workload API hand out a fresh SVID valid for ttl.
func (b *bridge) push(ttl time.Duration) *x509svid.SVID {
	b.t.Helper()
	svid, err := b.ca.Issue(dbID, ttl)
	if err != nil {
		b.t.Fatal(err)
	}
	resp, err := devapi.X509Response([]*x509svid.SVID{svid}, []*x509bundle.Bundle{b.ca.Bundle()})
	if err != nil {
		b.t.Fatal(err)
	}
	b.wl.SetX509(resp)
	return svid
}

// waitSinks waits until every sink has generation gen, except those
// listed in failed, which must have failed that many times.
func (b *bridge) waitSinks(gen uint64, failed map[string]uint64) {
	b.t.Helper()
	testkit.Eventually(b.t, fmt.Sprintf("generation %d applied by every sink (failures %v)", gen, failed), func() bool {
		for _, st := range b.src.SinkStatuses() {
			if n, ok := failed[st.Name]; ok {
				if st.Failures != n {
					return false
				}
			} else if st.Generation != gen {
				return false
			}
		}
		return true
	})
}

func (b *bridge) readyz() (int, string) {
	b.t.Helper()
	return testkit.Get(b.t, b.url+"/readyz")
}

// status fetches /status; anything but a 200 with a Status fails the test.
func (b *bridge) status() Status {
	b.t.Helper()
	code, body := testkit.Get(b.t, b.url+"/status")
	if code != http.StatusOK {
		b.t.Fatalf("/status = %d", code)
	}
	var st Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		b.t.Fatalf("/status is not a Status: %v\n%s", err, body)
	}
	return st
}

// expectReadyz checks /readyz: its code and that each want is in the body.
func (b *bridge) expectReadyz(code int, want ...string) string {
	b.t.Helper()
	got, body := b.readyz()
	if got != code {
		b.t.Fatalf("/readyz = %d, want %d; body:\n%s", got, code, body)
	}
	for _, w := range want {
		if !strings.Contains(body, w) {
			b.t.Errorf("/readyz body does not say %q:\n%s", w, body)
		}
	}
	return body
}

func TestReadyzTellsTheTruth(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pg")
	b := startBridge(t, bridgeOptions{folders: []filesink.Config{{Dir: dir}}})

	if code, body := testkit.Get(t, b.url+"/livez"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/livez = %d %q", code, body)
	}
	b.expectReadyz(http.StatusServiceUnavailable, "no SVID yet")

	b.push(10 * time.Minute)
	b.waitSinks(1, nil)
	b.expectReadyz(http.StatusOK, "ready: generation 1 delivered to 2 sinks")

	t.Run("folder unwritable", func(t *testing.T) {
		// A file where the folder should be: the next generation cannot be
		// written (root ignores permissions, not this).
		if err := os.Rename(dir, dir+".away"); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dir, []byte("in the way"), 0o644); err != nil {
			t.Fatal(err)
		}
		b.push(10 * time.Minute)
		b.waitSinks(2, map[string]uint64{"files:" + dir: 1})
		body := b.expectReadyz(http.StatusServiceUnavailable,
			"sink files:"+dir+": last apply failed (it has generation 1, current is 2)",
			"folder "+dir+": ")
		if strings.Contains(body, "sink sds") {
			t.Errorf("SDS is reported although it got generation 2:\n%s", body)
		}
		if lines := strings.Count(body, "\n"); lines != 2 {
			t.Errorf("/readyz has %d lines, want one per problem (2):\n%s", lines, body)
		}

		// Recovery: the folder the bridge locked is back in place (another
		// directory there would be refused) and the next rotation lands.
		if err := os.Remove(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(dir+".away", dir); err != nil {
			t.Fatal(err)
		}
		b.push(10 * time.Minute)
		b.waitSinks(3, nil)
		b.expectReadyz(http.StatusOK, "generation 3")
	})

	t.Run("SVID near expiry without rotation", func(t *testing.T) {
		// No rotation comes; 95% of the 10 minute lifetime passes.
		b.skew.Store(int64(9*time.Minute + 30*time.Second))
		b.expectReadyz(http.StatusServiceUnavailable, "default SVID "+dbID.String(), "of its lifetime left", "rotation is stuck")
		b.skew.Store(int64(11 * time.Minute))
		b.expectReadyz(http.StatusServiceUnavailable, "expired at", "folder "+dir+": ", "expired at")

		// A rotation arrives (longer-lived SVID): ready again at the same clock.
		b.skew.Store(int64(9*time.Minute + 30*time.Second))
		b.push(time.Hour)
		b.waitSinks(4, nil)
		b.expectReadyz(http.StatusOK, "generation 4")
		b.skew.Store(0)
	})

	if !strings.Contains(b.logs.String(), `msg="not ready"`) {
		t.Errorf("readiness changes are not logged")
	}
}

func TestReadyzMinValidity(t *testing.T) {
	b := startBridge(t, bridgeOptions{minValidity: time.Hour})
	b.push(30 * time.Minute)
	b.waitSinks(1, nil)
	b.expectReadyz(http.StatusServiceUnavailable, "sooner than admin.min_validity 1h0m0s")
	b.push(2 * time.Hour)
	b.waitSinks(2, nil)
	b.expectReadyz(http.StatusOK)
}

// sotwClient subscribes to secrets over SotW SDS and ACKs as Envoy does.
type sotwClient struct {
	t      *testing.T
	stream secretv3.SecretDiscoveryService_StreamSecretsClient
}

func newSotWClient(t *testing.T, path, node string) *sotwClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &sotwClient{t: t, stream: stream}
	c.send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: node}, ResourceNames: []string{"default"}, TypeUrl: resource.SecretType})
	return c
}

func (c *sotwClient) send(req *discoveryv3.DiscoveryRequest) {
	c.t.Helper()
	if err := c.stream.Send(req); err != nil {
		c.t.Fatal(err)
	}
}

// answer receives one push and ACKs it, or NACKs it with nack.
func (c *sotwClient) answer(nack string) *discoveryv3.DiscoveryResponse {
	c.t.Helper()
	resp, err := c.stream.Recv()
	if err != nil {
		c.t.Fatal(err)
	}
	req := &discoveryv3.DiscoveryRequest{VersionInfo: resp.GetVersionInfo(), ResourceNames: []string{"default"},
		TypeUrl: resource.SecretType, ResponseNonce: resp.GetNonce()}
	if nack != "" {
		req.VersionInfo = ""
		req.ErrorDetail = &rpcstatus.Status{Code: 3, Message: nack}
	}
	c.send(req)
	return resp
}

func TestReadyzRequiresSDSAck(t *testing.T) {
	b := startBridge(t, bridgeOptions{requireSDSAck: true})
	b.push(time.Hour)
	b.waitSinks(1, nil)
	b.expectReadyz(http.StatusServiceUnavailable, "no SDS client connected: nobody has acknowledged generation 1")

	c := newSotWClient(t, b.sdsPath, "envoy-1")
	c.answer("Failed to load private key")
	testkit.Eventually(t, "NACK seen", func() bool { return b.sds.Stats().NACKs == 1 })
	b.expectReadyz(http.StatusServiceUnavailable, "no SDS client has acknowledged any secrets yet (1 connected")

	b.push(time.Hour)
	b.waitSinks(2, nil)
	c.answer("")
	testkit.Eventually(t, "ACK of generation 2", func() bool { return ackProblem(sdsStatus(b.sds, b.src.Current().Generation, false), 2, false) == "" })
	b.expectReadyz(http.StatusOK)
}

// metrics scrapes /metrics into "name{labels}" → value.
func metrics(t testing.TB, url string) map[string]float64 {
	t.Helper()
	code, body := testkit.Get(t, url+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics = %d:\n%s", code, body)
	}
	return parseMetrics(t, body)
}

// parseMetrics reads Prometheus text into "name{labels}" → value.
func parseMetrics(t testing.TB, body string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

func TestMetricsAndStatus(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pg")
	failing := reload.ExecAction{Command: []string{"/bin/sh", "-c", "echo reload refused >&2; exit 3"}}
	runner := newRunner(t, reload.Config{Actions: []reload.Action{failing}, Attempts: 2, Backoff: time.Millisecond})
	b := startBridge(t, bridgeOptions{folders: []filesink.Config{{Dir: dir, Reload: runner}}})
	c := newSotWClient(t, b.sdsPath, "envoy-1")

	svid := b.push(time.Hour)
	// The swap went well; the action fails beside it.
	b.waitSinks(1, nil)
	testkit.Eventually(t, "the action's failure", func() bool { a := runner.Stats()[0]; return a.Failed() && !a.Running() })
	c.answer("")
	// Refused: a leaf that expired already.
	expired, err := b.ca.IssueWith(dbID, time.Hour, devapi.SVIDOptions{NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := devapi.X509Response([]*x509svid.SVID{expired}, []*x509bundle.Bundle{b.ca.Bundle()})
	if err != nil {
		t.Fatal(err)
	}
	b.wl.SetX509(resp)
	testkit.Eventually(t, "refused update", func() bool { return b.src.Counters().Refused == 1 })
	testkit.Eventually(t, "ACK of generation 1", func() bool {
		cl := b.sds.Clients()
		return len(cl) == 1 && cl[0].AckedGeneration == 1
	})

	m := metrics(t, b.url)
	files := "files:" + dir
	for series, want := range map[string]float64{
		`sds_bridge_build_info{goversion="go1.26.8",revision="0123456789ab",version="test"}`: 1,
		`sds_bridge_ready`:                     0, // the action fails
		`sds_bridge_rotations_total`:           1,
		`sds_bridge_generation`:                1,
		`sds_bridge_refused_updates_total`:     1,
		`sds_bridge_workload_api_errors_total`: 0,
		`sds_bridge_svid_not_after_timestamp_seconds{spiffe_id="` + dbID.String() + `"}`:       float64(svid.Certificates[0].NotAfter.Unix()),
		`sds_bridge_sink_generation{sink="sds"}`:                                               1,
		`sds_bridge_sink_generation{sink="` + files + `"}`:                                     1,
		`sds_bridge_sink_apply_failures_total{sink="sds"}`:                                     0,
		`sds_bridge_sink_apply_failures_total{sink="` + files + `"}`:                           0,
		`sds_bridge_sink_retries_total{sink="sds"}`:                                            0,
		`sds_bridge_sink_retries_total{sink="` + files + `"}`:                                  0,
		`sds_bridge_sink_delivery_seconds_count{sink="sds"}`:                                   1,
		`sds_bridge_sds_streams_open`:                                                          1,
		`sds_bridge_sds_pushes_total`:                                                          1,
		`sds_bridge_sds_nacks_total`:                                                           0,
		`sds_bridge_sds_refused_peers_total`:                                                   0,
		`sds_bridge_sds_connections_open`:                                                      1,
		`sds_bridge_sds_connections_over_cap_total`:                                            0,
		`sds_bridge_sds_clients_current`:                                                       1,
		`sds_bridge_file_write_failures_total{folder="` + dir + `"}`:                           0,
		`sds_bridge_reload_action_failures_total{action="exec:/bin/sh",folder="` + dir + `"}`:  2,
		`sds_bridge_reload_action_running_seconds{action="exec:/bin/sh",folder="` + dir + `"}`: 0,
		`sds_bridge_reload_pending_generation{folder="` + dir + `"}`:                           0,
	} {
		got, ok := m[series]
		if !ok {
			t.Errorf("/metrics has no %s", series)
			continue
		}
		if got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	if got, ok := m["sds_bridge_workload_api_reconnects_total"]; !ok || got != 0 {
		t.Errorf("sds_bridge_workload_api_reconnects_total = %v (present: %v), want 0 before any outage", got, ok)
	}
	if _, ok := m[`sds_bridge_sink_delivery_seconds_count{sink="`+files+`"}`]; !ok {
		t.Errorf("the folder's delivery was not observed in the latency histogram: its action's failure is not the swap's")
	}
	if _, ok := m["go_goroutines"]; !ok {
		t.Errorf("/metrics lacks the Go runtime metrics")
	}

	// The Workload API goes away and comes back: counted.
	b.wl.Stop()
	testkit.Eventually(t, "watch error counted", func() bool { return b.src.Counters().WatchErrors > 0 })
	if err := b.wl.Start(); err != nil {
		t.Fatal(err)
	}
	if got := metrics(t, b.url)["sds_bridge_workload_api_errors_total"]; got < 1 {
		t.Errorf("sds_bridge_workload_api_errors_total = %v after the Workload API went away", got)
	}
	// Back: its answer, the expired SVID it still serves, is a reconnect
	// and a second refusal.
	testkit.Eventually(t, "reconnect counted", func() bool { c := b.src.Counters(); return c.Reconnects == 1 && c.Refused == 2 })
	if got := metrics(t, b.url)["sds_bridge_workload_api_reconnects_total"]; got != 1 {
		t.Errorf("sds_bridge_workload_api_reconnects_total = %v after the Workload API came back, want 1", got)
	}

	// /status: the same truth as JSON, and as text for a human.
	st := b.status()
	serial := svid.Certificates[0].SerialNumber.Text(16)
	if st.Ready || st.Generation != 1 || len(st.SVIDs) != 1 || st.SVIDs[0].Serial != serial || !st.SVIDs[0].Default ||
		!st.SVIDs[0].NotAfter.Equal(svid.Certificates[0].NotAfter) || len(st.Bundles) != 1 || st.WorkloadAPI.Refused != 2 {
		t.Errorf("status header = %+v", st)
	}
	if len(st.Folders) != 1 || st.Folders[0].Material == nil || st.Folders[0].Material.Serial != serial {
		t.Fatalf("status folders = %+v, want the folder with serial %s", st.Folders, serial)
	}
	a := st.Folders[0].Actions
	if len(a) != 1 || a[0].OK || a[0].Generation != 1 || a[0].Attempts != 2 || a[0].Failures != 2 || !strings.Contains(a[0].Error, "reload refused") {
		t.Errorf("status action = %+v, want failed twice for generation 1 with the stderr tail", a)
	}
	// What /metrics counted, /status shows: both render the same Status.
	if st.WorkloadAPI.Reconnects != 1 || st.SDS == nil || st.SDS.ClientsCurrent != 1 || st.SDS.ConnectionsOpen != 1 || st.SDS.NewestAcked != 1 {
		t.Errorf("status counts = %+v, %+v; want 1 reconnect, 1 current client, 1 connection, newest acknowledged 1", st.WorkloadAPI, st.SDS)
	}
	if st.SDS == nil || len(st.SDS.Clients) != 1 || st.SDS.Clients[0].Node != "envoy-1" || st.SDS.Clients[0].AckedGeneration != 1 ||
		st.SDS.Clients[0].Validation != "spiffe" || st.SDS.Clients[0].ValidationReason != "config sds.disable_spiffe_cert_validation: false" {
		t.Errorf("status sds = %+v", st.SDS)
	}
	var text strings.Builder
	if err := st.WriteText(&text, st.Time); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"NOT READY", dbID.String(), "serial " + serial, "not after " + stamp(svid.Certificates[0].NotAfter),
		dir + ": generation 1, serial " + serial,
		"exec:/bin/sh: FAILED for generation 1 after 2 attempts", "envoy-1", "acknowledged generation 1",
		"validation spiffe (config sds.disable_spiffe_cert_validation: false)",
	} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("status text lacks %q:\n%s", want, text.String())
		}
	}
}

// CAs back-date NotBefore (the dev CA and SPIRE by 10 s). A 3 s SVID
// (dev --svid-ttl 3s) with 1.2 s left has 40% of the life it arrived with,
// though only 9% counted from NotBefore: it is ready. With 0.1 s left and
// no rotation, it is not.
func TestLifetimeCountsFromArrival(t *testing.T) {
	b := startBridge(t, bridgeOptions{})
	svid := b.push(3 * time.Second)
	b.waitSinks(1, nil)
	notAfter := svid.Certificates[0].NotAfter
	b.skew.Store(int64(time.Until(notAfter) - 1200*time.Millisecond))
	b.expectReadyz(http.StatusOK)
	b.skew.Store(int64(time.Until(notAfter) - 100*time.Millisecond))
	b.expectReadyz(http.StatusServiceUnavailable, "of its lifetime left")
}

// BenchmarkReadyz is the cost of one /readyz probe over HTTP with one
// credential folder (read and verified from disk each time) and SDS.
func BenchmarkReadyz(b *testing.B) {
	bb := startBridge(b, bridgeOptions{folders: []filesink.Config{{Dir: filepath.Join(b.TempDir(), "pg")}}})
	bb.push(time.Hour)
	bb.waitSinks(1, nil)
	for b.Loop() {
		if code, body := bb.readyz(); code != http.StatusOK {
			b.Fatalf("/readyz = %d: %s", code, body)
		}
	}
}

// BenchmarkMetricsScrape is the cost of one /metrics scrape, readiness and
// the Go runtime metrics included.
func BenchmarkMetricsScrape(b *testing.B) {
	bb := startBridge(b, bridgeOptions{folders: []filesink.Config{{Dir: filepath.Join(b.TempDir(), "pg")}}})
	bb.push(time.Hour)
	bb.waitSinks(1, nil)
	for b.Loop() {
		if code, _ := testkit.Get(b, bb.url+"/metrics"); code != http.StatusOK {
			b.Fatalf("/metrics = %d", code)
		}
	}
}

// newRunner is a folder's reload runner for cfg.
func newRunner(t testing.TB, cfg reload.Config) *reload.Runner {
	t.Helper()
	r, err := reload.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestAScrapeDoesNotReadTheDisk: /metrics reports the folders as readiness
// last read them. With the folder's files gone, a scrape still says ready
// (it did not look), /readyz finds the files missing, and the next scrape
// reports that reading.
func TestAScrapeDoesNotReadTheDisk(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pg")
	b := startBridge(t, bridgeOptions{folders: []filesink.Config{{Dir: dir}}})
	b.push(time.Hour)
	b.waitSinks(1, nil)
	b.expectReadyz(http.StatusOK)
	if got := metrics(t, b.url)["sds_bridge_ready"]; got != 1 {
		t.Fatalf("sds_bridge_ready = %v after a ready /readyz, want 1", got)
	}

	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if got := metrics(t, b.url)["sds_bridge_ready"]; got != 1 {
		t.Errorf("sds_bridge_ready = %v with the folder gone: the scrape read the disk; want 1, the last reading", got)
	}
	// The reader's detail, found with errors.As, not its error text.
	if body := b.expectReadyz(http.StatusServiceUnavailable, "folder "+dir+": the directory "+dir+" does not exist"); strings.Contains(body, "filesink:") {
		t.Errorf("/readyz carries the reader's package prefix:\n%s", body)
	}
	if got := metrics(t, b.url)["sds_bridge_ready"]; got != 0 {
		t.Errorf("sds_bridge_ready = %v after /readyz found the folder empty, want 0", got)
	}
}

// A folder read under one generation says nothing about the next: after a
// rotation the scrape judges the folder by its sink until readiness reads
// it again, rather than call the new serial "something else wrote to it".
func TestAScrapeAfterARotationDoesNotJudgeByTheOldRead(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pg")
	b := startBridge(t, bridgeOptions{folders: []filesink.Config{{Dir: dir}}})
	b.push(time.Hour)
	b.waitSinks(1, nil)
	b.expectReadyz(http.StatusOK)
	b.push(time.Hour)
	b.waitSinks(2, nil)
	if got := metrics(t, b.url)["sds_bridge_ready"]; got != 1 {
		t.Errorf("sds_bridge_ready = %v after a rotation the folder applied, want 1", got)
	}
	b.expectReadyz(http.StatusOK)
}
