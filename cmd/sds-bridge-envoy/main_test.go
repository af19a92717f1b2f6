package main

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// envoyBootstrap runs the tool with a bridge config holding
// configYAML and returns stdout, stderr and the error.
func envoyBootstrap(t *testing.T, configYAML string, args ...string) (string, string, error) {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "bridge.yaml")
	if err := os.WriteFile(cfg, []byte(configYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	err := run(append([]string{"--config", cfg}, args...), &stdout, &stderr)
	return stdout.String(), stderr.String(), err
}

// writeFile writes data to a new file and returns its path.
func writeFile(t *testing.T, name, data string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const spireSocketConfig = "sds:\n  socket: /run/spire/sockets/agent.sock\n"

// --check passes a bootstrap written for SPIRE Agent's SDS against a bridge
// listening on the socket it dials, prints Envoy's deprecation warnings with
// their YAML lines on stderr, and exits 0.
func TestEnvoyBootstrapCheckAcceptsASPIREBootstrapAndWarns(t *testing.T) {
	data, err := os.ReadFile("../../internal/envoyboot/testdata/spire/backend.yaml")
	if err != nil {
		t.Fatal(err)
	}
	f := writeFile(t, "envoy.yaml", string(data))
	stdout, stderr, err := envoyBootstrap(t, spireSocketConfig, "--check", f)
	if err != nil {
		t.Fatalf("refused: %v\nstderr: %s", err, stderr)
	}
	if want := "ok: " + f + " asks the bridge on /run/spire/sockets/agent.sock for spiffe://example.org, spiffe://example.org/backend\n"; stdout != want {
		t.Errorf("stdout = %q, want %q", stdout, want)
	}
	for _, w := range []string{"warning: " + f + ": YAML line 82: static_resources.clusters[spire_agent].http2_protocol_options: field is deprecated",
		"warning: " + f + ": YAML line 105: admin.access_log_path: field is deprecated"} {
		if !strings.Contains(stderr, w) {
			t.Errorf("stderr lacks %q:\n%s", w, stderr)
		}
	}
	// Against the default socket the same file is refused, naming both paths.
	_, _, err = envoyBootstrap(t, "", "--check", f)
	if err == nil || !strings.Contains(err.Error(), `cluster "spire_agent" dials /run/spire/sockets/agent.sock, but the bridge listens on /run/sds-bridge/sds.sock`) {
		t.Errorf("default socket: %v", err)
	}
}

// With sds.disable_spiffe_cert_validation the generator works in every
// mode and transport: peers are validated through spiffe://<trust-domain>
// (a plain trusted_ca the bridge serves then) plus SAN matchers, never ALL,
// and --check accepts what it printed.
func TestEnvoyBootstrapWithSPIFFEValidationDisabled(t *testing.T) {
	conf := "sds:\n  disable_spiffe_cert_validation: true\n"
	for _, mode := range [][]string{
		{"--mode", "inbound", "--allow-spiffe-id", "spiffe://example.org/frontend"},
		{"--mode", "outbound", "--upstream", "backend:8443", "--upstream-spiffe-id", "spiffe://example.org/backend"},
	} {
		for _, tr := range []string{"sotw", "delta", "ads"} {
			t.Run(mode[1]+"-"+tr, func(t *testing.T) {
				out, stderr, err := envoyBootstrap(t, conf, append(mode, "--transport", tr)...)
				if err != nil {
					t.Fatalf("%v\n%s", err, stderr)
				}
				for _, want := range []string{"name: spiffe://example.org\n", "exact: " + mode[len(mode)-1] + "\n", "san_type: URI"} {
					if !strings.Contains(out, want) {
						t.Errorf("output lacks %q:\n%s", want, out)
					}
				}
				if strings.Contains(out, "name: ALL") {
					t.Errorf("asks for ALL, which the bridge does not serve with validation disabled")
				}
				f := writeFile(t, "envoy.yaml", out)
				if _, stderr, err := envoyBootstrap(t, conf, "--check", f); err != nil || stderr != "" {
					t.Errorf("--check: %v %s", err, stderr)
				}
			})
		}
	}
	// Peers of two trust domains cannot share one plain trusted_ca.
	_, _, err := envoyBootstrap(t, conf, "--allow-spiffe-id", "spiffe://example.org/a", "--allow-spiffe-id", "spiffe://other.example/b")
	if err == nil || !strings.Contains(err.Error(), "--allow-spiffe-id") || !strings.Contains(err.Error(), "disable_spiffe_cert_validation") {
		t.Errorf("two trust domains with validation disabled: %v", err)
	}
}

// A missing or bad option is reported as the flag to pass.
func TestEnvoyBootstrapErrorsNameTheFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--mode", "outbound", "--upstream-spiffe-id", "spiffe://example.org/b"}, "--upstream"},
		{[]string{"--mode", "outbound", "--upstream", "b:1"}, "--upstream-spiffe-id"},
		{[]string{"--mode", "outbound", "--upstream", "b:1", "--upstream-spiffe-id", "http://x"}, "--upstream-spiffe-id"},
		{[]string{"--mode", "inbound"}, "--allow-spiffe-id"},
		{[]string{"--mode", "inbound", "--allow-spiffe-id", "nope"}, "--allow-spiffe-id"},
		{[]string{"--mode", "sideways"}, "--mode"},
		{[]string{"--allow-spiffe-id", "spiffe://example.org/a", "--transport", "rest"}, "--transport"},
	} {
		_, _, err := envoyBootstrap(t, "", tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want+" ") && !strings.Contains(err.Error(), tc.want+":") {
			t.Errorf("%q: err = %v, want it to name %s", tc.args, err, tc.want)
		}
		if err != nil && (strings.Contains(err.Error(), "the upstream address") || strings.Contains(err.Error(), "UpstreamAddress")) {
			t.Errorf("%q: names the option, not the flag: %v", tc.args, err)
		}
	}
}

// --node-id, --cluster and --listen-address reach the bootstrap, Envoy's
// admin interface is off unless --admin-port asks for it and then listens
// on loopback only, and --check accepts each result.
func TestEnvoyBootstrapNodeListenAddressAndAdminFlags(t *testing.T) {
	inbound := []string{"--allow-spiffe-id", "spiffe://example.org/frontend"}
	for _, tc := range []struct {
		name      string
		args      []string
		want, not []string
	}{
		{"defaults", nil, []string{"id: sidecar-inbound\n", "cluster: sds-bridge-sidecar\n", "address: 0.0.0.0\n"}, []string{"admin:"}},
		{"node and address", []string{"--node-id", "payments-7f9c", "--cluster", "payments", "--listen-address", "10.0.0.7"},
			[]string{"id: payments-7f9c\n", "cluster: payments\n", "address: 10.0.0.7\n"}, []string{"admin:", "0.0.0.0"}},
		{"admin on loopback", []string{"--admin-port", "9901"},
			[]string{"admin:\n  address:\n    socket_address:\n      address: 127.0.0.1\n      port_value: 9901\n"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, stderr, err := envoyBootstrap(t, "", append(inbound, tc.args...)...)
			if err != nil {
				t.Fatalf("%v\n%s", err, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(out, n) {
					t.Errorf("output has %q:\n%s", n, out)
				}
			}
			if _, stderr, err := envoyBootstrap(t, "", "--check", writeFile(t, "envoy.yaml", out)); err != nil || stderr != "" {
				t.Errorf("--check: %v %s", err, stderr)
			}
		})
	}
	for _, tc := range []struct{ args []string }{
		{[]string{"--listen-address", "localhost"}},
		{[]string{"--admin-port", "70000"}},
	} {
		_, _, err := envoyBootstrap(t, "", append(inbound, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.args[0]) {
			t.Errorf("%q: err = %v, want it to name %s", tc.args, err, tc.args[0])
		}
	}
}

// The README's row for envoy-bootstrap names every flag sds-bridge-envoy
// lists in its help.
func TestREADMERowListsEveryFlag(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var row string
	for _, line := range strings.Split(string(readme), "\n") {
		if strings.HasPrefix(line, "| `envoy-bootstrap ") {
			row = line
		}
	}
	if row == "" {
		t.Fatal("README has no command-table row for envoy-bootstrap")
	}
	var help bytes.Buffer
	if err := run([]string{"-h"}, &help, &help); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	flags := regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`).FindAllStringSubmatch(help.String(), -1)
	if len(flags) < 10 {
		t.Fatalf("-h lists %d flags (the test reads nothing?):\n%s", len(flags), help.String())
	}
	for _, f := range flags {
		if !strings.Contains(row, "--"+f[1]) {
			t.Errorf("README row for envoy-bootstrap lacks --%s", f[1])
		}
	}
}

// Through the daemon's binary, with the tool beside it as a release and
// make build put them: `sds-bridge envoy-bootstrap --check` on a bootstrap
// with a private extension prints the one warning and ok, and exits 0;
// one with a misspelt ext_authz field exits 1 naming the field and line.
func TestEnvoyBootstrapThroughTheDaemonBinary(t *testing.T) {
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./cmd/sds-bridge", "./cmd/sds-bridge-envoy")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	spire := filepath.Join("..", "..", "internal", "envoyboot", "testdata", "spire")
	check := func(file string) (string, string, int) {
		cmd := exec.Command(filepath.Join(dir, "sds-bridge"), "envoy-bootstrap", "--sds-socket", "/run/spire/sockets/agent.sock", "--check", file)
		cmd.Env = []string{"PATH=" + t.TempDir()} // only the one beside
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		_ = cmd.Run()
		return stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()
	}
	private := filepath.Join(spire, "private-extension.yaml")
	stdout, stderr, code := check(private)
	if code != 0 || !strings.HasPrefix(stdout, "ok: "+private) || strings.Count(stderr, "warning: ") != 1 ||
		!strings.Contains(stderr, "YAML line 49: ") || !strings.Contains(stderr, "acme.envoy.filters.http.audit.v1.Audit") {
		t.Errorf("private extension: exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	data, err := os.ReadFile(filepath.Join(spire, "jwt.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	bad := writeFile(t, "envoy.yaml", strings.Replace(string(data), "transport_api_version: V3\n              grpc_service:", "transport_api_versoin: V3\n              grpc_service:", 1))
	stdout, stderr, code = check(bad)
	if code != 1 || stdout != "" || !strings.Contains(stderr, `unknown field "transport_api_versoin" (YAML line 43)`) {
		t.Errorf("misspelt field: exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
}
