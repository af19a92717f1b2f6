package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// dev's Workload API listens, with its first SVID issued, before the
// bridge makes its first call: a config with a JWT-SVID gets its token
// without a single retry (dev once logged "JWT files: retrying …
// Unavailable" twice, its JWT fetch starting before its own socket
// listened). --workload-api-socket puts the socket where asked and
// --workload-api-mode opens it to a program run as another user.
func TestDevWorkloadAPIListensFirstWhereAndAsAsked(t *testing.T) {
	dir := testkit.ShortDir(t)
	folder := filepath.Join(dir, "certs")
	conf := filepath.Join(dir, "bridge.yaml")
	if err := os.WriteFile(conf, []byte(`sds:
  enabled: false
files:
  - dir: `+folder+`
    jwt_svids:
      - audience: test
        file_name: jwt_svid.token
    jwt_bundle_file_name: cert.jwt
`), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "wl", "api.sock")
	d := startDev(t, dir, "--config", conf, "--admin", "", "--workload-api-socket", sock, "--workload-api-mode", "0777")
	testkit.Eventually(t, "the JWT-SVID file", func() bool {
		data, err := os.ReadFile(filepath.Join(folder, "jwt_svid.token"))
		return err == nil && len(data) > 0
	})
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatalf("no Workload API socket where --workload-api-socket says: %v", err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o777 {
		t.Errorf("%s: mode %v, want a socket with 0777", sock, fi.Mode())
	}
	if !strings.Contains(d.stdout.String(), "unix://"+sock) {
		t.Errorf("the banner does not name unix://%s:\n%s", sock, d.stdout)
	}
	d.stop()
	if logs := d.stderr.String(); strings.Contains(logs, "retrying") {
		t.Errorf("dev retried a Workload API call of its own:\n%s", logs)
	}
}
