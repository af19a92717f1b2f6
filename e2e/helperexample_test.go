//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// exampleDir holds spiffe-helper's own examples, vendored unchanged (see
// its README.md for their origin).
const exampleDir = "../internal/helperconf/testdata/spiffe-helper/examples"

// helperExample is one of spiffe-helper's example files, and the
// replacements a test makes to it: paths, ports and the agent address
// only, each one listed so that the test's log says what a user changes.
type helperExample struct {
	Name    string
	text    string
	Changed []string
}

// loadHelperExample reads an example; for a Kubernetes manifest, the
// helper.conf of its ConfigMap.
func loadHelperExample(t *testing.T, name string) *helperExample {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(exampleDir, name))
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Ext(name) == ".yaml" {
		data = configMapHelperConf(t, data)
	}
	return &helperExample{Name: name, text: string(data)}
}

func configMapHelperConf(t *testing.T, manifest []byte) []byte {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(manifest))
	for {
		var doc struct {
			Kind string            `yaml:"kind"`
			Data map[string]string `yaml:"data"`
		}
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			t.Fatal("e2e: no ConfigMap with a helper.conf in the manifest")
		} else if err != nil {
			t.Fatal(err)
		}
		if doc.Kind == "ConfigMap" && doc.Data["helper.conf"] != "" {
			return []byte(doc.Data["helper.conf"])
		}
	}
}

// Replace changes old, which must occur exactly once, into new, and
// records why (a path, a port or the agent address).
func (e *helperExample) Replace(t *testing.T, why, old, new string) {
	t.Helper()
	if n := strings.Count(e.text, old); n != 1 {
		t.Fatalf("e2e: %s holds %q %d times, want once", e.Name, old, n)
	}
	e.text = strings.Replace(e.text, old, new, 1)
	e.Changed = append(e.Changed, fmt.Sprintf("%s: %q → %q", why, old, new))
}

// Write writes the example as changed to path and logs the changes.
func (e *helperExample) Write(t *testing.T, path string, u *osUser) {
	t.Helper()
	writeFile(t, path, []byte(e.text), 0o644, u)
	t.Logf("%s, changed only as follows (%d):\n  %s", e.Name, len(e.Changed), strings.Join(e.Changed, "\n  "))
}

// startHelperBridge runs `sds-bridge run --spiffe-helper-config conf
// extra…` as u in dir, with env added; the bridge must exit 0 on SIGTERM.
func startHelperBridge(t *testing.T, dir, name, conf string, u *osUser, env []string, extra ...string) *bridge {
	t.Helper()
	requireBridge(t)
	b := &bridge{Name: name}
	t.Cleanup(func() {
		if code := b.proc.ExitCode(); code != 0 {
			t.Errorf("e2e: bridge %s exited with %d after SIGTERM, want 0", name, code)
		}
	})
	args := append([]string{"run", "--spiffe-helper-config", conf, "--log-format", "text"}, extra...)
	b.proc = startProc(t, cmdSpec{Name: "bridge-" + name, Path: bridgeBin, Args: args, Dir: dir, Env: env, User: u},
		filepath.Join(dir, "bridge-"+name+".log"))
	return b
}

// addEntry registers one more workload in s with DNS names (SPIRE makes
// the first one the subject's CN, which MariaDB's and Mosquitto's user
// mapping read), after startSPIRE.
func addEntry(t *testing.T, s *spire, path, selector string, dns ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	args := []string{"entry", "create", "-parentID", s.agentID().String(), "-spiffeID", s.ID(path).String(),
		"-selector", selector, "-x509SVIDTTL", strconv.Itoa(x509SVIDTTL)}
	for _, d := range dns {
		args = append(args, "-dns", d)
	}
	mustRun(t, ctx, s.serverCmd(args...))
}

// startClientFolder starts a bridge (a YAML config) as u writing u's SVID
// into work/name in the spiffe-helper layout, for a client of the example's
// server, and returns the folder.
func startClientFolder(t *testing.T, work, name string, s *spire, u *osUser) string {
	t.Helper()
	dir := filepath.Join(work, name)
	mkdirOwned(t, dir, 0o755, u)
	startBridge(t, work, name, bridgeConfig{
		WorkloadAPI: bridgeWorkloadAPI{Address: s.WorkloadAPIAddr()},
		SDS:         noSDS(),
		Files:       []bridgeFolder{{Dir: dir, Layout: layoutHelper}},
	}, u)
	return dir
}

// nobody is the account client workloads run as (their own SPIRE entry,
// their own folder).
func nobody(t *testing.T) *osUser {
	t.Helper()
	u, err := lookupUser("nobody")
	if err != nil {
		t.Fatal(err)
	}
	return u
}
