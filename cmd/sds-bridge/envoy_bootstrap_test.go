package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// standIn writes, as dir/sds-bridge-envoy, a program that says who it is
// and what it got, and exits 3.
func standIn(t *testing.T, dir, who string) {
	t.Helper()
	script := "#!/bin/sh\necho \"" + who + ": $*\"\necho \"" + who + " on stderr\" >&2\nexit 3\n"
	if err := os.WriteFile(filepath.Join(dir, envoyTool), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}

// runBinary runs the built sds-bridge with args and only PATH in its
// environment, and returns stdout, stderr and the exit status.
func runBinary(t *testing.T, bin, path string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"PATH=" + path}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()
}

// `sds-bridge envoy-bootstrap ARGS` runs sds-bridge-envoy ARGS as git runs
// a plugin: the one beside the executable before one on PATH, one on PATH
// when none is beside; its output and exit status pass through unchanged,
// with no line of the bridge's own added.
func TestEnvoyBootstrapRunsSdsBridgeEnvoyBesideTheBinaryOrOnPATH(t *testing.T) {
	bin := buildBridge(t)
	onPath := t.TempDir()
	standIn(t, onPath, "on PATH")

	stdout, stderr, code := runBinary(t, bin, onPath, "envoy-bootstrap", "--check", "envoy.yaml")
	if stdout != "on PATH: --check envoy.yaml\n" || stderr != "on PATH on stderr\n" || code != 3 {
		t.Errorf("none beside: stdout %q, stderr %q, exit %d; want the one on PATH, its output and exit 3", stdout, stderr, code)
	}

	standIn(t, filepath.Dir(bin), "beside")
	stdout, stderr, code = runBinary(t, bin, onPath, "envoy-bootstrap", "--mode", "outbound")
	if stdout != "beside: --mode outbound\n" || stderr != "beside on stderr\n" || code != 3 {
		t.Errorf("one beside: stdout %q, stderr %q, exit %d; want the one beside, its output and exit 3", stdout, stderr, code)
	}
}

// Without sds-bridge-envoy, envoy-bootstrap exits 1 saying where it looked,
// why the tool is separate, and how to get it.
func TestEnvoyBootstrapWithoutTheToolSaysHowToGetIt(t *testing.T) {
	bin := buildBridge(t)
	stdout, stderr, code := runBinary(t, bin, t.TempDir(), "envoy-bootstrap", "--check", "envoy.yaml")
	if code != 1 || stdout != "" {
		t.Errorf("exit %d, stdout %q; want 1 and nothing", code, stdout)
	}
	for _, want := range []string{"sds-bridge-envoy", "beside " + bin + " nor on PATH", "the same release", "go install github.com/sds-bridge/sds-bridge/cmd/sds-bridge-envoy@"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
}
