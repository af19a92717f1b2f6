package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/internal/helperconf"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
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
		var ec coded
		if !errors.As(err, &ec) || ec.code != 2 || ec.err != nil {
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
		m, err := filesink.Inspect(filesink.InspectConfig{Dir: certs, Names: filesink.Names{Cert: "tls.crt", Key: "tls.key", Bundle: "ca.crt"}})
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
		set, err := testkit.ParseJWTBundles(bundle)
		if err != nil {
			return false
		}
		_, err = jwtsvid.ParseAndValidate(string(token), set, []string{"api"})
		return err == nil
	})
}

// import-spiffe-helper and run --spiffe-helper-config refuse a file name
// run would refuse (a path, or a name the swap reserves), naming the
// helper.conf key and the value, and import prints no YAML for it.
func TestImportRefusesFileNamesRunRefuses(t *testing.T) {
	for _, tc := range []struct{ key, value string }{
		{"svid_file_name", "../etc/cron.d/x"},
		{"svid_key_file_name", "keys/svid_key.pem"},
		{"svid_bundle_file_name", ".."},
		{"jwt_svid_file_name", "/etc/passwd"},
		{"jwt_bundle_file_name", "..data"},
	} {
		t.Run(tc.key, func(t *testing.T) {
			names := map[string]string{
				"svid_file_name": "svid.pem", "svid_key_file_name": "svid_key.pem", "svid_bundle_file_name": "bundle.pem",
				"jwt_svid_file_name": "api.token", "jwt_bundle_file_name": "bundle.json",
			}
			names[tc.key] = tc.value
			conf := filepath.Join(t.TempDir(), "helper.conf")
			src := fmt.Sprintf("cert_dir = \"/certs\"\nsvid_file_name = %q\nsvid_key_file_name = %q\nsvid_bundle_file_name = %q\n"+
				"jwt_svids = [{ jwt_audience = \"api\", jwt_svid_file_name = %q }]\njwt_bundle_file_name = %q\n",
				names["svid_file_name"], names["svid_key_file_name"], names["svid_bundle_file_name"], names["jwt_svid_file_name"], names["jwt_bundle_file_name"])
			if err := os.WriteFile(conf, []byte(src), 0o600); err != nil {
				t.Fatal(err)
			}
			want := []string{tc.key, fmt.Sprintf("%q", tc.value), conf}

			var stdout, stderr syncBuffer
			err := run(t.Context(), []string{"import-spiffe-helper", conf}, &stdout, &stderr)
			if err == nil {
				t.Fatalf("import-spiffe-helper accepted %s = %q:\n%s", tc.key, tc.value, stdout.String())
			}
			for _, w := range want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("import error %q does not contain %q", err, w)
				}
			}
			if stdout.String() != "" {
				t.Errorf("import printed YAML for a refused helper.conf:\n%s", stdout.String())
			}

			err = run(t.Context(), []string{"run", "--spiffe-helper-config", conf, "--workload-api", "unix:///nonexistent.sock"}, io.Discard, io.Discard)
			if err == nil {
				t.Fatalf("run --spiffe-helper-config accepted %s = %q", tc.key, tc.value)
			}
			for _, w := range want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("run error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// A helper.conf with keys the bridge cannot carry over makes
// import-spiffe-helper exit non-zero, naming each key and printing no
// YAML, unless --allow-unsupported is given; run and dev with
// --spiffe-helper-config refuse it the same way and say how to convert it.
func TestUnsupportedKeysRefusedUnlessAllowed(t *testing.T) {
	conf := filepath.Join("..", "..", "internal", "helperconf", "testdata", "unsupported-key.conf")
	keys := []string{"renew_singal", "renew_signal"}

	var stdout, stderr syncBuffer
	err := run(t.Context(), []string{"import-spiffe-helper", conf}, &stdout, &stderr)
	if err == nil {
		t.Fatalf("import-spiffe-helper accepted unsupported keys:\n%s", stdout.String())
	}
	for _, want := range append(keys, "--allow-unsupported", conf) {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("import error %q does not name %q", err, want)
		}
	}
	if stdout.String() != "" {
		t.Errorf("import printed YAML for a refused helper.conf:\n%s", stdout.String())
	}
	for _, k := range keys {
		if !strings.Contains(stderr.String(), k+": not supported:") {
			t.Errorf("stderr lacks the note on %s:\n%s", k, stderr.String())
		}
	}

	var yaml syncBuffer
	if err := run(t.Context(), []string{"import-spiffe-helper", "--allow-unsupported", conf}, &yaml, io.Discard); err != nil {
		t.Fatalf("import-spiffe-helper --allow-unsupported: %v", err)
	}
	if !strings.Contains(yaml.String(), "NOT SUPPORTED (renew_signal)") {
		t.Errorf("--allow-unsupported YAML lacks the NOT SUPPORTED comment:\n%s", yaml.String())
	}

	for _, cmd := range []string{"run", "dev"} {
		err := run(t.Context(), []string{cmd, "--spiffe-helper-config", conf, "--admin", ""}, io.Discard, io.Discard)
		if err == nil {
			t.Fatalf("%s --spiffe-helper-config accepted unsupported keys", cmd)
		}
		for _, want := range append(keys, "import-spiffe-helper --allow-unsupported", "--config") {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s error %q does not contain %q", cmd, err, want)
			}
		}
	}
}
