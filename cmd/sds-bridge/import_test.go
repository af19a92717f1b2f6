package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/internal/helperconf"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
	"github.com/sds-bridge/sds-bridge/jwtfiles"
)

func TestImportSpiffeHelperPrintsYAMLAndNotes(t *testing.T) {
	conf := filepath.Join("..", "..", "internal", "helperconf", "testdata", "postgres.conf")
	var stdout, stderr syncBuffer
	if err := run(t.Context(), []string{"import-spiffe-helper", conf}, &stdout, &stderr); err != nil {
		t.Fatalf("import-spiffe-helper: %v\n%s", err, stderr.String())
	}
	src, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	want, err := helperconf.Convert(src, helperconf.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if stdout.String() != string(want.YAML) {
		t.Errorf("stdout is not the converted YAML:\n%s", stdout.String())
	}
	if !strings.Contains(stderr.String(), "cert_file_mode: warning: 444 has no leading 0") {
		t.Errorf("stderr lacks the decimal mode warning:\n%s", stderr.String())
	}

	for _, args := range [][]string{{}, {"a.conf", "b.conf"}} {
		err := run(t.Context(), append([]string{"import-spiffe-helper"}, args...), &stdout, &stderr)
		var ec exitCode
		if !errors.As(err, &ec) || ec != 2 {
			t.Errorf("import-spiffe-helper %v: %v, want exit status 2", args, err)
		}
	}
	if err := run(t.Context(), []string{"import-spiffe-helper", filepath.Join(t.TempDir(), "missing.conf")}, &stdout, &stderr); err == nil {
		t.Error("import of a missing file succeeded")
	}
}

func TestRunRefusesConfigAndSpiffeHelperConfigTogether(t *testing.T) {
	var out syncBuffer
	err := run(t.Context(), []string{"run", "--config", "a.yaml", "--spiffe-helper-config", "helper.conf"}, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "give only one") {
		t.Errorf("run with both: %v, want an error saying to give only one", err)
	}
}

// A helper.conf given to dev writes what spiffe-helper wrote: the X.509
// files under its names and the JWT-SVID and JWT bundle files.
func TestDevRunsASpiffeHelperConfig(t *testing.T) {
	dir := testkit.ShortDir(t)
	certs := filepath.Join(dir, "certs")
	conf := filepath.Join(dir, "helper.conf")
	if err := os.WriteFile(conf, []byte(`
agent_address = "/run/spire/sockets/agent.sock"
cert_dir = "`+certs+`"
svid_file_name = "tls.crt"
svid_key_file_name = "tls.key"
svid_bundle_file_name = "ca.crt"
cert_file_mode = 0640
jwt_bundle_file_name = "bundle.json"
jwt_svids = [{ jwt_audience = "api", jwt_svid_file_name = "api.token" }]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	startDev(t, dir, "--spiffe-helper-config", conf)
	testkit.Eventually(t, "the X.509 files under helper.conf's names", func() bool {
		m, err := filesink.Inspect(filesink.InspectConfig{Dir: certs, CertFileName: "tls.crt", KeyFileName: "tls.key", BundleFileName: "ca.crt"})
		return err == nil && m.SPIFFEID.String() == "spiffe://example.org/dev"
	})
	if fi, err := os.Stat(filepath.Join(certs, "tls.crt")); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("tls.crt mode %v (%v), want 0640 from cert_file_mode", fi.Mode().Perm(), err)
	}
	testkit.Eventually(t, "a JWT-SVID that verifies with the JWT bundle file", func() bool {
		token, err1 := os.ReadFile(filepath.Join(certs, "api.token"))
		bundle, err2 := os.ReadFile(filepath.Join(certs, "bundle.json"))
		if err1 != nil || err2 != nil {
			return false
		}
		set, err := jwtfiles.ParseBundles(bundle)
		if err != nil {
			return false
		}
		_, err = jwtsvid.ParseAndValidate(string(token), set, []string{"api"})
		return err == nil
	})
}
