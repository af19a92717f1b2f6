package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// --owner gives a helper.conf's files to a uid:gid (spiffe-helper has no
// such key): import-spiffe-helper writes it into the folder, and run
// refuses it without --spiffe-helper-config, where a YAML config says
// files[].owner instead.
func TestOwnerFlagGoesWithAHelperConf(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "helper.conf")
	if err := os.WriteFile(conf, []byte("agent_address = \"/run/agent.sock\"\ncert_dir = \"/certs\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if err := run(t.Context(), []string{"import-spiffe-helper", "--owner", "107:113", conf}, &stdout, &stderr); err != nil {
		t.Fatalf("import: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), `owner: "107:113"`) {
		t.Errorf("import --owner 107:113 wrote no owner:\n%s", stdout.String())
	}
	err := run(t.Context(), []string{"run", "--owner", "107:113", "--dir", filepath.Join(dir, "certs"), "--admin", ""}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "--owner goes with --spiffe-helper-config") {
		t.Errorf("run --owner without a helper.conf = %v, want it refused", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("the refused run touched %s: %d entries", dir, len(entries))
	}
}
