//go:build e2e

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// spiffeHelperDefaultAgent is where spiffe-helper looks for the agent
// without agent_address or $SPIFFE_ENDPOINT_SOCKET (its config.go,
// defaultAgentAddress); its Kubernetes example mounts the socket there.
const spiffeHelperDefaultAgent = "/tmp/spire-agent/public/api.sock"

// spiffe-helper's Kubernetes example without a daemon
// (examples/k8s/helper-no-daemon.yaml), its ConfigMap's helper.conf used
// byte for byte: `run --spiffe-helper-config` with nothing but the agent
// at spiffe-helper's default path writes tls.crt, tls.key, ca.pem, the
// JWT-SVID for audience "test" and the JWT bundle into its working
// directory (cert_dir = "") once, and exits 0 (daemon_mode = false).
func TestSpiffeHelperK8sNoDaemonExampleRunsUnchanged(t *testing.T) {
	start := time.Now()
	work := newWorkDir(t)
	s := startSPIRE(t, work, spireEntry{Path: "/k8s-helper", Selector: "unix:uid:0"})
	app := filepath.Join(work, "app")
	mkdirOwned(t, app, 0o755, nil)
	ex := loadHelperExample(t, "k8s/helper-no-daemon.yaml")
	// The pod runs `-config config/helper.conf` beside its ConfigMap mount.
	ex.Write(t, filepath.Join(app, "config", "helper.conf"), nil)

	run := atDefaultAgentPath(t, s.AgentSocket, cmdSpec{Name: "sds-bridge run (k8s example)", Path: bridgeBin,
		Args: []string{"run", "--spiffe-helper-config", "config/helper.conf"}, Dir: app})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	requireBridge(t)
	ran := time.Now()
	out, code, err := runCmd(ctx, run)
	took := time.Since(ran)
	if err != nil {
		t.Fatal(err)
	}
	if code != 0 {
		t.Fatalf("run --spiffe-helper-config exited %d:\n%s", code, out)
	}
	id := s.ID("/k8s-helper")
	svid, err := x509svid.Load(filepath.Join(app, "tls.crt"), filepath.Join(app, "tls.key"))
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := x509bundle.Load(s.TrustDomain, filepath.Join(app, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, bundle); err != nil || svid.ID != id {
		t.Errorf("tls.crt holds %s, verified against ca.pem: %v; want %s", svid.ID, err, id)
	}
	if err := checkJWTFile(filepath.Join(app, "jwt_svid.token"), filepath.Join(app, "cert.jwt"), id, "test"); err != nil {
		t.Error(err)
	}
	t.Logf("one run wrote tls.crt (serial %s), tls.key, ca.pem, jwt_svid.token and cert.jwt and exited 0 in %s; test took %s",
		svid.Certificates[0].SerialNumber.Text(16), took.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// atDefaultAgentPath makes the agent reachable at spiffe-helper's default
// path for run, and only for run. If nothing is there the test puts a
// link to agentSock there (removed, with the directories it made, when
// the test ends); if something is (a real agent), run gets a mount
// namespace of its own with a tmpfs over that directory holding the link,
// so that the host's socket is never touched.
func atDefaultAgentPath(t *testing.T, agentSock string, run cmdSpec) cmdSpec {
	t.Helper()
	dir := filepath.Dir(spiffeHelperDefaultAgent)
	if _, err := os.Lstat(spiffeHelperDefaultAgent); err == nil {
		t.Logf("%s is taken: the bridge runs in a mount namespace with its own %s", spiffeHelperDefaultAgent, dir)
		run.Args = append([]string{"--mount", "--propagation", "private", "sh", "-c",
			`mount -t tmpfs tmpfs "$1" && ln -s "$2" "$1/api.sock" && shift 2 && exec "$@"`,
			"sh", dir, agentSock, run.Path}, run.Args...)
		run.Path = "unshare"
		return run
	}
	var made []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil {
			break
		}
		made = append(made, d)
	}
	t.Cleanup(func() {
		_ = os.Remove(spiffeHelperDefaultAgent)
		for _, d := range made {
			_ = os.Remove(d)
		}
	})
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(agentSock, spiffeHelperDefaultAgent); err != nil {
		t.Fatal(err)
	}
	return run
}
