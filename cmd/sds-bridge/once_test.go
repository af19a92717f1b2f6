package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sds-bridge/sds-bridge/internal/devapi"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// runToExit runs the command in dir and returns its error and output, or
// fails if it is still running after testkit.Timeout: --once must exit.
func runToExit(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	t.Chdir(dir) // dev keeps its Workload API socket under ./sds-bridge-dev
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, out, out) }()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(testkit.Timeout):
		cancel()
		<-done
		t.Fatalf("%s still running after %s:\n%s", strings.Join(args, " "), testkit.Timeout, out)
		return "", nil
	}
}

// `dev --once --dir D` (run --once against the development Workload API)
// writes D and every folder of its config, JWT files included, runs a
// folder's reload action exactly once (after every file is in place),
// serves no SDS, and exits 0 with each folder holding a valid set.
func TestDevOnceWritesEveryFolderRunsTheActionOnceAndExits(t *testing.T) {
	dir := testkit.ShortDir(t)
	plain := filepath.Join(dir, "plain")
	certs := filepath.Join(dir, "certs")
	actions := filepath.Join(dir, "actions.log")
	cfg := filepath.Join(dir, "bridge.yaml")
	writeConfig(t, cfg, fmt.Sprintf(`
sds:
  socket: %s
files:
  - dir: %s
    cert_file_name: server.crt
    key_file_name: server.key
    bundle_file_name: root.crt
    jwt_svids: [{audience: db, file_name: db.token}]
    jwt_bundle_file_name: jwt_bundle.json
    on_rotate:
      - exec:
          command: ["/bin/sh", "-c", 'echo "$SDS_BRIDGE_GENERATION" >> %s']
`, filepath.Join(dir, "sds.sock"), certs, actions))

	out, err := runToExit(t, dir, "dev", "--once", "--config", cfg, "--dir", plain, "--admin", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("dev --once: %v\n%s", err, out)
	}
	if !strings.Contains(out, "Envoy SDS is not served") {
		t.Errorf("dev --once did not say SDS is not served:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "sds.sock")); !os.IsNotExist(err) {
		t.Errorf("dev --once made the SDS socket: %v", err)
	}
	for _, args := range [][]string{{"check", "--config", cfg}, {"check", "--dir", plain}} {
		if err := run(t.Context(), args, &syncBuffer{}, &syncBuffer{}); err != nil {
			t.Errorf("%s after dev --once: %v", strings.Join(args, " "), err)
		}
	}
	for _, name := range []string{"db.token", "jwt_bundle.json"} {
		if fi, err := os.Stat(filepath.Join(certs, name)); err != nil || fi.Size() == 0 {
			t.Errorf("JWT file %s not written: %v", name, err)
		}
	}
	data, err := os.ReadFile(actions)
	if err != nil {
		t.Fatalf("the reload action did not run: %v", err)
	}
	if got := strings.TrimSpace(string(data)); got != "1" {
		t.Errorf("the action ran for generations %q, want once, for 1", got)
	}
}

// `run --once` without a Workload API to answer exits non-zero after
// workload_api.first_update_timeout, with the reason.
func TestRunOnceFailsWithTheReasonAfterFirstUpdateTimeout(t *testing.T) {
	dir := testkit.ShortDir(t)
	cfg := filepath.Join(dir, "bridge.yaml")
	writeConfig(t, cfg, `
workload_api:
  address: unix://`+filepath.Join(dir, "nobody.sock")+`
  first_update_timeout: 500ms
files:
  - dir: `+filepath.Join(dir, "certs")+`
`)
	out, err := runToExit(t, dir, "run", "--once", "--config", cfg)
	if err == nil {
		t.Fatalf("run --once without a Workload API exited 0:\n%s", out)
	}
	for _, want := range []string{"--once", "no valid X.509 SVID", "within 500ms", "registration entry"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("run --once = %q, want it to say %q", err, want)
		}
	}
}

// A helper.conf with daemon_mode = false, given to run as is, writes once
// and exits: spiffe-helper's init-container pattern keeps working.
func TestRunSpiffeHelperConfigWithDaemonModeFalseWritesOnceAndExits(t *testing.T) {
	dir := testkit.ShortDir(t)
	srv := devapi.NewServer(devapi.ServerConfig{SocketPath: filepath.Join(dir, "api.sock"), Logger: testkit.Logger(t)})
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	iss, err := devapi.NewIssuer(devapi.IssuerConfig{
		TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"),
		SPIFFEIDs:   []spiffeid.ID{spiffeid.RequireFromString("spiffe://example.org/db")},
		TTL:         time.Minute,
		Logger:      testkit.Logger(t),
	}, srv)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	issued := make(chan error, 1)
	go func() { issued <- iss.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-issued })

	certs := filepath.Join(dir, "certs")
	conf := filepath.Join(dir, "helper.conf")
	writeConfig(t, conf, `agent_address = "`+filepath.Join(dir, "api.sock")+`"
cert_dir = "`+certs+`"
svid_file_name = "server.crt"
svid_key_file_name = "server.key"
svid_bundle_file_name = "root.crt"
daemon_mode = false
`)
	out, err := runToExit(t, dir, "run", "--spiffe-helper-config", conf)
	if err != nil {
		t.Fatalf("run --spiffe-helper-config (daemon_mode = false): %v\n%s", err, out)
	}
	if !strings.Contains(out, "run --once") {
		t.Errorf("no note about --once:\n%s", out)
	}
	if err := run(t.Context(), []string{"check", "--dir", certs}, &syncBuffer{}, &syncBuffer{}); err != nil {
		t.Errorf("check --dir after the run: %v", err)
	}
}

// Under --once an action that runs on jwt only still runs, once, after the
// X.509 set and the JWT files are in place: --once has no later refresh to
// run it.
func TestDevOnceRunsAnActionOnJWTOnlyOnce(t *testing.T) {
	dir := testkit.ShortDir(t)
	certs := filepath.Join(dir, "certs")
	actions := filepath.Join(dir, "actions.log")
	cfg := filepath.Join(dir, "bridge.yaml")
	writeConfig(t, cfg, fmt.Sprintf(`
sds:
  enabled: false
files:
  - dir: %s
    jwt_svids: [{audience: db, file_name: db.token}]
    on_rotate:
      - exec:
          command: ["/bin/sh", "-c", 'test -s %s/db.token && echo "$SDS_BRIDGE_EVENT" >> %s']
        on: [jwt]
`, certs, certs, actions))

	out, err := runToExit(t, dir, "dev", "--once", "--config", cfg, "--admin", "")
	if err != nil {
		t.Fatalf("dev --once: %v\n%s", err, out)
	}
	data, err := os.ReadFile(actions)
	if err != nil {
		t.Fatalf("the jwt action did not run (or ran before the token was written): %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(data)); got != "x509" {
		t.Errorf("the action ran for events %q, want once, after the swap", got)
	}
}
