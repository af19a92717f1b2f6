package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sds-bridge/sds-bridge/admin"
	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// devBridge is `sds-bridge dev` running in this process.
type devBridge struct {
	t      *testing.T
	dir    string // working directory: dev's home, sockets, folders
	stdout *syncBuffer
	stderr *syncBuffer
	cancel context.CancelFunc
	done   chan error
}

// startDev runs `sds-bridge dev args…` in dir (a short temporary
// directory) until the test ends.
func startDev(t *testing.T, dir string, args ...string) *devBridge {
	t.Helper()
	// dev keeps its Workload API socket under ./sds-bridge-dev.
	t.Chdir(dir)
	ctx, cancel := context.WithCancel(context.Background())
	d := &devBridge{t: t, dir: dir, stdout: &syncBuffer{}, stderr: &syncBuffer{}, cancel: cancel, done: make(chan error, 1)}
	go func() { d.done <- run(ctx, append([]string{"dev"}, args...), d.stdout, d.stderr) }()
	t.Cleanup(func() {
		d.stop()
		if t.Failed() {
			t.Logf("dev stdout:\n%s\ndev stderr:\n%s", d.stdout, d.stderr)
		}
	})
	return d
}

// stop ends dev and checks it stopped cleanly; calling it twice is fine.
func (d *devBridge) stop() {
	d.t.Helper()
	d.cancel()
	if err, ok := <-d.done; ok {
		close(d.done)
		if err != nil {
			d.t.Errorf("dev: %v", err)
		}
	}
}

var adminAddr = regexp.MustCompile(`msg="admin endpoint: listening" addr=(\S+)`)

// adminURL is the admin server's URL, from the log line naming the port
// it bound.
func (d *devBridge) adminURL() string {
	d.t.Helper()
	var addr string
	testkit.Eventually(d.t, "the admin listening log line", func() bool {
		m := adminAddr.FindStringSubmatch(d.stderr.String())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	})
	return "http://" + addr
}

func (d *devBridge) status(url string) admin.Status {
	d.t.Helper()
	code, body := testkit.Get(d.t, url+"/status")
	if code != http.StatusOK {
		d.t.Fatalf("/status = %d: %s", code, body)
	}
	var st admin.Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		d.t.Fatalf("/status: %v\n%s", err, body)
	}
	return st
}

// The "done when": dev with --config and --admin runs the folder's
// exec action once per rotation, and /livez, /readyz, /metrics, /status
// and `sds-bridge status` answer.
func TestDevRunsActionsAndServesAdmin(t *testing.T) {
	dir := testkit.ShortDir(t)
	certs := filepath.Join(dir, "certs")
	actions := filepath.Join(dir, "actions.log")
	cfg := filepath.Join(dir, "bridge.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`
sds:
  socket: %s
files:
  - dir: %s
    on_rotate:
      - exec:
          command: ["/bin/sh", "-c", 'echo "$SDS_BRIDGE_GENERATION $SDS_BRIDGE_SPIFFE_ID $SDS_BRIDGE_DIR" >> %s']
admin:
  listen: 127.0.0.1:1   # overridden by --admin
`, filepath.Join(dir, "sds.sock"), certs, actions)), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDev(t, dir, "--config", cfg, "--admin", "127.0.0.1:0", "--svid-ttl", "4s")
	url := d.adminURL()

	if code, body := testkit.Get(t, url+"/livez"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/livez = %d %q", code, body)
	}
	testkit.Eventually(t, "/readyz 200", func() bool {
		code, _ := testkit.Get(t, url+"/readyz")
		return code == http.StatusOK
	})
	testkit.Eventually(t, "generation 3", func() bool { return d.status(url).Generation >= 3 })

	_, metrics := testkit.Get(t, url+"/metrics")
	for _, want := range []string{
		"sds_bridge_rotations_total ",
		`sds_bridge_sink_generation{sink="files:` + certs + `"}`,
		`sds_bridge_sink_delivery_seconds_count{sink="sds"}`,
		`sds_bridge_reload_action_failures_total{action="exec:/bin/sh",folder="` + certs + `"} 0`,
		`sds_bridge_svid_not_after_timestamp_seconds{spiffe_id="spiffe://example.org/dev"}`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	st := d.status(url)
	if len(st.Folders) != 1 || st.Folders[0].Dir != certs || st.Folders[0].Material == nil || len(st.Folders[0].Actions) != 1 {
		t.Fatalf("/status folders = %+v", st.Folders)
	}
	var text bytes.Buffer
	if err := run(t.Context(), []string{"status", "--admin", strings.TrimPrefix(url, "http://")}, &text, &text); err != nil {
		t.Fatalf("status: %v", err)
	}
	for _, want := range []string{"spiffe://example.org/dev", certs + ": generation", "exec:/bin/sh: ok for generation", "Sinks"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("`sds-bridge status` lacks %q:\n%s", want, text.String())
		}
	}

	d.stop()
	// Every generation the folder swapped in ran the action exactly once;
	// only the very last may have been cut short by the stop.
	swapped := generationsIn(t, d.stderr.String(), `msg="folder: swapped in new generation".* generation=(\d+)`)
	data, err := os.ReadFile(actions)
	if err != nil {
		t.Fatal(err)
	}
	var ran []uint64
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 || f[1] != "spiffe://example.org/dev" || f[2] != certs {
			t.Fatalf("action saw %q, want generation, SPIFFE ID and folder", line)
		}
		g, _ := strconv.ParseUint(f[0], 10, 64)
		ran = append(ran, g)
	}
	if len(swapped) < 3 {
		t.Fatalf("only %d generations swapped in: %v", len(swapped), swapped)
	}
	if !slices.Equal(ran, swapped) && !slices.Equal(ran, swapped[:len(swapped)-1]) {
		t.Errorf("the action ran for generations %v; the folder swapped in %v", ran, swapped)
	}
}

func generationsIn(t *testing.T, logs, pattern string) []uint64 {
	t.Helper()
	var out []uint64
	for _, m := range regexp.MustCompile(pattern).FindAllStringSubmatch(logs, -1) {
		g, err := strconv.ParseUint(m[1], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, g)
	}
	return out
}

// Issue 2's "done when": an SDS client on dev's socket gets the very leaf
// that is on disk, and ROOTCA and ALL are answered with the folder's roots.
func TestDevServesTheLeafOnDiskOverSDS(t *testing.T) {
	dir := testkit.ShortDir(t)
	certs, sock := filepath.Join(dir, "certs"), filepath.Join(dir, "sds.sock")
	d := startDev(t, dir, "--svid-ttl", "2s", "--admin", "", "--sds-socket", sock, "--dir", certs)
	testkit.Eventually(t, "SDS socket", func() bool {
		_, err := os.Stat(sock)
		return err == nil
	})

	ctx, cancel := context.WithTimeout(t.Context(), testkit.Timeout)
	defer cancel()
	stream, err := sdsClient(t, sock).StreamSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"default", "ROOTCA", "ALL"}
	req := &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "envoy"}, ResourceNames: names, TypeUrl: resource.SecretType}
	for matched := false; !matched; {
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		// ACK, as Envoy does, then compare with the folder if it holds
		// the same generation; with 2 s SVIDs it may already be ahead.
		req = &discoveryv3.DiscoveryRequest{VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce(),
			ResourceNames: names, TypeUrl: resource.SecretType}
		secrets := secretsByName(t, resp, names)
		gen, err := strconv.ParseUint(resp.GetVersionInfo()[strings.LastIndexByte(resp.GetVersionInfo(), '-')+1:], 10, 64)
		if err != nil {
			t.Fatalf("version %q does not end in the generation: %v", resp.GetVersionInfo(), err)
		}
		// The folder gets each generation a little after SDS does.
		testkit.Eventually(t, fmt.Sprintf("generation %d on disk", gen), func() bool { return diskGeneration(certs) >= gen })
		matched = compareWithDisk(t, certs, gen, secrets)
	}
	if strings.Contains(d.stderr.String(), "admin endpoint: listening") {
		t.Errorf(`--admin "" still started the admin listener`)
	}
}

// sdsClient is an SDS client on the bridge's socket, closed when the test
// ends.
func sdsClient(t *testing.T, sock string) secretv3.SecretDiscoveryServiceClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return secretv3.NewSecretDiscoveryServiceClient(conn)
}

// secretsByName unpacks resp's Secrets by name; it fails the test unless
// every one of names is there.
func secretsByName(t *testing.T, resp *discoveryv3.DiscoveryResponse, names []string) map[string]*tlsv3.Secret {
	t.Helper()
	secrets := map[string]*tlsv3.Secret{}
	for _, a := range resp.GetResources() {
		s := &tlsv3.Secret{}
		if err := a.UnmarshalTo(s); err != nil {
			t.Fatal(err)
		}
		secrets[s.GetName()] = s
	}
	for _, n := range names {
		if secrets[n] == nil {
			t.Fatalf("response %s lacks %q: has %v", resp.GetVersionInfo(), n, secrets)
		}
	}
	return secrets
}

// generationDir resolves the folder's ..data once and reads the marker of
// that generation; 0 when there is none (yet, or swapped out meanwhile).
func generationDir(folder string) (string, uint64) {
	target, err := os.Readlink(filepath.Join(folder, filesink.DataLink))
	if err != nil {
		return "", 0
	}
	genDir := filepath.Join(folder, target)
	var marker struct {
		Generation uint64 `json:"generation"`
	}
	data, err := os.ReadFile(filepath.Join(genDir, filesink.MarkerFileName))
	if err != nil || json.Unmarshal(data, &marker) != nil {
		return "", 0
	}
	return genDir, marker.Generation
}

func diskGeneration(folder string) uint64 {
	_, g := generationDir(folder)
	return g
}

// compareWithDisk checks the secrets against the folder's current
// generation if that is gen; it reports whether it was.
func compareWithDisk(t *testing.T, folder string, gen uint64, secrets map[string]*tlsv3.Secret) bool {
	t.Helper()
	genDir, onDisk := generationDir(folder)
	if onDisk != gen {
		return false // the next rotation came in between: try the next push
	}
	read := func(name string) []*x509.Certificate {
		data, err := os.ReadFile(filepath.Join(genDir, name))
		if err != nil {
			t.Fatal(err)
		}
		return parseCerts(t, data)
	}
	leaf := read(filesink.DefaultCertFileName)[0]
	roots := read(filesink.DefaultBundleFileName)

	sdsLeaf := parseCerts(t, secrets["default"].GetTlsCertificate().GetCertificateChain().GetInlineBytes())[0]
	if !leaf.Equal(sdsLeaf) {
		t.Errorf("generation %d: SDS serves leaf serial %x, the folder holds serial %x", gen, sdsLeaf.SerialNumber, leaf.SerialNumber)
	}
	for _, name := range []string{"ROOTCA", "ALL"} {
		got := validationRoots(t, secrets[name])
		if len(got) != 1 || !sameCerts(got["example.org"], roots) {
			t.Errorf("generation %d: %s trusts %v, want example.org with the folder's roots", gen, name, got)
		}
	}
	return true
}

// validationRoots reads the roots per trust domain out of a validation
// context, whether plain trusted_ca ("" as trust domain: example.org here)
// or Envoy's SPIFFE certificate validator.
func validationRoots(t *testing.T, s *tlsv3.Secret) map[string][]*x509.Certificate {
	t.Helper()
	vc := s.GetValidationContext()
	if vc == nil {
		t.Fatalf("secret %q is not a validation context", s.GetName())
	}
	if ca := vc.GetTrustedCa(); ca != nil {
		return map[string][]*x509.Certificate{"example.org": parseCerts(t, ca.GetInlineBytes())}
	}
	spiffe := &tlsv3.SPIFFECertValidatorConfig{}
	if err := vc.GetCustomValidatorConfig().GetTypedConfig().UnmarshalTo(spiffe); err != nil {
		t.Fatalf("secret %q: neither trusted_ca nor a SPIFFE validator config: %v", s.GetName(), err)
	}
	out := map[string][]*x509.Certificate{}
	for _, td := range spiffe.GetTrustDomains() {
		out[td.GetName()] = parseCerts(t, td.GetTrustBundle().GetInlineBytes())
	}
	return out
}

func parseCerts(t *testing.T, data []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		t.Fatal("no certificate in PEM data")
	}
	return out
}

func sameCerts(a, b []*x509.Certificate) bool {
	return slices.EqualFunc(a, b, func(x, y *x509.Certificate) bool { return x.Equal(y) })
}
