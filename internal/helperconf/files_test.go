package helperconf

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sds-bridge/sds-bridge/internal/config"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// spiffe-helper's health_checks, defaults included, become the admin
// listener on the same port and probe paths, with nothing left behind.
func TestImportedHealthChecksKeepPortAndPaths(t *testing.T) {
	dir := testkit.ShortDir(t)
	conf := filepath.Join(dir, "helper.conf")
	if err := os.WriteFile(conf, []byte(`
cert_dir = "`+filepath.Join(dir, "certs")+`"
svid_file_name = "tls.crt"
svid_key_file_name = "tls.key"
svid_bundle_file_name = "ca.crt"
health_checks {
  listener_enabled = true
  liveness_path = "/healthz/live"
  readiness_path = "/healthz/ready"
}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	res, cfg, err := ConvertFile(conf, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if keys := res.Unsupported(); len(keys) > 0 {
		t.Fatalf("health_checks not carried over: %v", keys)
	}
	cfg.Default()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if a := cfg.Admin; a.Address() != "0.0.0.0:8081" || a.LivenessPath != "/healthz/live" || a.ReadinessPath != "/healthz/ready" {
		t.Errorf("admin %q %q %q, want 0.0.0.0:8081 /healthz/live /healthz/ready", a.Address(), a.LivenessPath, a.ReadinessPath)
	}
}

// A helper.conf over the configuration file bound is refused naming the
// file and the bound, before HCL parses it (a 50 MB value took 1.6 GB).
func TestAHelperConfOverTheBoundIsRefusedByName(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "helper.conf")
	big := `cert_dir = "/certs"` + "\nhint = \"" + strings.Repeat("x", config.MaxFileSize) + "\"\n"
	if err := os.WriteFile(conf, []byte(big), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := ConvertFile(conf, Options{})
	if err == nil || !strings.Contains(err.Error(), conf) || !strings.Contains(err.Error(), "larger than 1048576 bytes") {
		t.Errorf("a helper.conf of %d bytes: %v; want an error naming the file and the bound", len(big), err)
	}
}

// An unknown helper.conf key is reported with the nearest key
// spiffe-helper knows, when one is close ("cert_dirr" → "cert_dir").
func TestAnUnknownHelperConfKeySuggestsTheNearest(t *testing.T) {
	res, err := Convert([]byte("cert_dirr = \"/certs\"\nfavourite_colour = \"blue\"\n"), Options{BaseDir: "/"})
	if err != nil {
		t.Fatal(err)
	}
	texts := map[string]string{}
	for _, n := range res.Notes {
		texts[n.Key] = n.Text
	}
	if got := texts["cert_dirr"]; !strings.HasSuffix(got, `too); did you mean "cert_dir"?`) {
		t.Errorf("cert_dirr: note %q, want a hint naming cert_dir", got)
	}
	if got := texts["favourite_colour"]; got == "" || strings.Contains(got, "did you mean") {
		t.Errorf("favourite_colour: note %q, want an unknown key without a guess", got)
	}
}
