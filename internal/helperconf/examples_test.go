package helperconf

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/internal/config"
)

// spiffeHelperKeys is every key spiffe-helper v0.11.0 accepts: the hcl
// tags of cmd/spiffe-helper/config/config.go (Config, JWTConfig) and
// pkg/health (health_checks), each with a helper.conf line that sets it.
// Keep it in step with a newer spiffe-helper's config.go.
var spiffeHelperKeys = []struct{ key, set string }{
	{"add_intermediates_to_bundle", `add_intermediates_to_bundle = true`},
	{"agent_address", `agent_address = "/run/spire/agent.sock"`},
	{"cmd", `cmd = "/usr/bin/true"`},
	{"cmd_args", "cmd = \"/usr/bin/echo\"\ncmd_args = \"reload\""},
	{"pid_file_name", "pid_file_name = \"/run/app.pid\"\nrenew_signal = \"SIGHUP\""},
	{"cert_dir", `cert_dir = "/certs"`},
	{"cert_file_mode", `cert_file_mode = 0644`},
	{"key_file_mode", `key_file_mode = 0600`},
	{"jwt_bundle_file_mode", "jwt_bundle_file_name = \"b.json\"\njwt_bundle_file_mode = 0640"},
	{"jwt_svid_file_mode", "jwt_svids = [{jwt_audience = \"a\", jwt_svid_file_name = \"t\"}]\njwt_svid_file_mode = 0640"},
	{"include_federated_domains", `include_federated_domains = true`},
	{"omit_expired", `omit_expired = true`},
	{"renew_signal", "cmd = \"/usr/sbin/app\"\nrenew_signal = \"SIGHUP\""},
	{"daemon_mode", `daemon_mode = false`},
	{"health_checks", "health_checks {\n  listener_enabled = true\n}"},
	{"health_checks.listener_enabled", "health_checks {\n  listener_enabled = true\n}"},
	{"health_checks.bind_port", "health_checks {\n  listener_enabled = true\n  bind_port = 9090\n}"},
	{"health_checks.liveness_path", "health_checks {\n  listener_enabled = true\n  liveness_path = \"/l\"\n}"},
	{"health_checks.readiness_path", "health_checks {\n  listener_enabled = true\n  readiness_path = \"/r\"\n}"},
	{"hint", `hint = "db"`},
	{"svid_file_name", `svid_file_name = "s.pem"`},
	{"svid_key_file_name", `svid_key_file_name = "k.pem"`},
	{"svid_bundle_file_name", `svid_bundle_file_name = "b.pem"`},
	{"jwt_svids", `jwt_svids = [{jwt_audience = "a", jwt_svid_file_name = "t"}]`},
	{"jwt_audience", `jwt_svids = [{jwt_audience = "a", jwt_svid_file_name = "t"}]`},
	{"jwt_extra_audiences", `jwt_svids = [{jwt_audience = "a", jwt_extra_audiences = ["b"], jwt_svid_file_name = "t"}]`},
	{"jwt_svid_file_name", `jwt_svids = [{jwt_audience = "a", jwt_svid_file_name = "t"}]`},
	{"jwt_bundle_file_name", `jwt_bundle_file_name = "b.json"`},
}

// Every key spiffe-helper accepts is carried over (a line of the YAML
// names it) or refused with a reason printed, by both import-spiffe-helper
// (Import) and run --spiffe-helper-config (Load) — never dropped silently.
// With daemon_mode = false the config is run once instead.
func TestEveryKeyOfSpiffeHelpersConfigIsCarriedOverOrRefusedWithAReason(t *testing.T) {
	var top []string
	for _, k := range spiffeHelperKeys {
		if !strings.Contains(k.key, ".") && !strings.HasPrefix(k.key, "jwt_") || k.key == "jwt_svids" || strings.HasSuffix(k.key, "_mode") || k.key == "jwt_bundle_file_name" {
			top = append(top, k.key)
		}
	}
	slices.Sort(top)
	known := slices.Sorted(slices.Values(knownKeys))
	if !slices.Equal(top, known) {
		t.Errorf("spiffe-helper's top-level keys %v, the converter knows %v", top, known)
	}
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", "")
	t.Setenv("SPIRE_AGENT_ADDRESS", "")
	const base = "svid_file_name = \"svid.pem\"\nsvid_key_file_name = \"svid.key\"\nsvid_bundle_file_name = \"bundle.pem\"\ncert_dir = \"/certs\"\n"
	for _, k := range spiffeHelperKeys {
		t.Run(k.key, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "helper.conf")
			if err := os.WriteFile(path, []byte(base+k.set+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			var imported, importNotes, loadNotes bytes.Buffer
			importErr := Import(&imported, &importNotes, path, Options{}, false)
			_, once, loadErr := Load(&loadNotes, path, Options{})
			name := k.key[strings.LastIndex(k.key, ".")+1:]
			refused := regexp.MustCompile(`(?m)^sds-bridge: .*: ` + regexp.QuoteMeta(name) + `: not supported: \S`)
			carried := regexp.MustCompile(`(?m)^\s*[^#\s].*# .*\b` + regexp.QuoteMeta(name) + `\b`)
			switch {
			case importErr != nil || loadErr != nil:
				for _, e := range []error{importErr, loadErr} {
					if e == nil || !strings.Contains(e.Error(), name) {
						t.Errorf("refused without naming %s: %v", name, e)
					}
				}
				if !refused.Match(importNotes.Bytes()) || !refused.Match(loadNotes.Bytes()) {
					t.Errorf("refused with no reason printed:\n%s", loadNotes.String())
				}
			case k.key == "daemon_mode":
				if !once {
					t.Error("daemon_mode = false does not run the config once")
				}
			case !carried.Match(imported.Bytes()):
				t.Errorf("no line of the YAML carries %s:\n%s", name, imported.String())
			}
		})
	}
}

// helperConfOf is the helper.conf an example holds: the file itself, or
// the ConfigMap's helper.conf in a Kubernetes manifest.
func helperConfOf(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Ext(path) != ".yaml" {
		return data
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc struct {
			Kind string            `yaml:"kind"`
			Data map[string]string `yaml:"data"`
		}
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			t.Fatalf("%s: no ConfigMap with a helper.conf", path)
		} else if err != nil {
			t.Fatal(err)
		}
		if doc.Kind == "ConfigMap" && doc.Data["helper.conf"] != "" {
			return []byte(doc.Data["helper.conf"])
		}
	}
}

// spiffe-helper's own examples, vendored unchanged, convert without a key
// left behind, to the golden YAML beside each (go test -update rewrites
// it), and the result is a config run accepts.
func TestSpiffeHelpersExamplesConvertWithNothingLeftBehind(t *testing.T) {
	for _, ex := range []string{"postgresql/helper.conf", "mysql/helper.conf", "mosquitto/helper.conf", "k8s/helper-no-daemon.yaml"} {
		t.Run(ex, func(t *testing.T) {
			path := filepath.Join("testdata/spiffe-helper/examples", ex)
			r, err := Convert(helperConfOf(t, path), Options{BaseDir: "/srv/app", Getenv: noEnv})
			if err != nil {
				t.Fatal(err)
			}
			if keys := r.Unsupported(); len(keys) > 0 {
				t.Errorf("not carried over: %v", keys)
			}
			if _, err := r.Config(); err != nil {
				t.Errorf("Config: %v", err)
			}
			want := filepath.Join(filepath.Dir(path), "converted.yaml")
			got := golden(r)
			if *update {
				if err := os.WriteFile(want, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			wantData, err := os.ReadFile(want)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(got, wantData) {
				t.Errorf("output differs from %s (go test -update rewrites it):\n%s", want, got)
			}
		})
	}
}

// An unset agent_address resolves as spiffe-helper resolves it:
// $SPIFFE_ENDPOINT_SOCKET (left to the bridge, which reads the same
// variable), else $SPIRE_AGENT_ADDRESS, else its default socket
// /tmp/spire-agent/public/api.sock; both variables set is refused, as
// spiffe-helper refuses it.
func TestUnsetAgentAddressResolvesAsSpiffeHelperDoes(t *testing.T) {
	for _, tc := range []struct {
		name, endpoint, legacy string
		address                string // "" for none written
		refused                bool
	}{
		{name: "nothing set", address: "unix:///tmp/spire-agent/public/api.sock"},
		{name: "SPIFFE_ENDPOINT_SOCKET", endpoint: "unix:///run/agent.sock"},
		{name: "SPIRE_AGENT_ADDRESS", legacy: "/run/old.sock", address: "unix:///run/old.sock"},
		{name: "both", endpoint: "unix:///run/agent.sock", legacy: "/run/old.sock", refused: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"SPIFFE_ENDPOINT_SOCKET": tc.endpoint, "SPIRE_AGENT_ADDRESS": tc.legacy}
			r, err := Convert([]byte("cert_dir = \"/c\"\n"), Options{Getenv: func(k string) string { return env[k] }})
			if err != nil {
				t.Fatal(err)
			}
			if got := slices.Contains(r.Unsupported(), "agent_address"); got != tc.refused {
				t.Fatalf("agent_address refused = %v, want %v:\n%s", got, tc.refused, r.YAML)
			}
			c, err := r.Config()
			if err != nil {
				t.Fatal(err)
			}
			if c.WorkloadAPI.Address != tc.address {
				t.Errorf("workload_api.address = %q, want %q", c.WorkloadAPI.Address, tc.address)
			}
		})
	}
}

// The PostgreSQL example's reload, psql running SELECT pg_reload_conf(),
// becomes the built-in postgres action over the same connection, which
// takes a server not started yet for nothing to reload; any other psql
// command stays a command.
func TestPsqlPgReloadConfBecomesThePostgresAction(t *testing.T) {
	for _, tc := range []struct{ cmd, args, dsn string }{
		{"/usr/bin/psql", `-p 5432 -c "SELECT pg_reload_conf();"`, "port=5432"},
		{"psql", `-h /run/postgresql -U postgres -d postgres -c "select pg_reload_conf()"`, "host=/run/postgresql user=postgres dbname=postgres"},
		{"psql", `--port=5433 -X --command "SELECT pg_reload_conf()" app admin`, "port=5433 user=admin dbname=app"},
		{"psql", `-c "SELECT pg_reload_conf();"`, "sslmode=prefer"},
		{"psql", `-c "SELECT 1"`, ""},
		{"psql", `-v ON_ERROR_STOP=1 -c "SELECT pg_reload_conf()"`, ""},
		{"psql", `-c "SELECT pg_reload_conf()" "host=db port=5432"`, ""},
		{"/usr/bin/mysql", `-e "SELECT pg_reload_conf()"`, ""},
	} {
		conf := "cert_dir = \"/c\"\ncmd = \"" + tc.cmd + "\"\ncmd_args = " + strconv.Quote(tc.args) + "\nrenew_signal = \"\"\n"
		r, err := Convert([]byte(conf), Options{Getenv: noEnv})
		if err != nil {
			t.Fatal(err)
		}
		c, err := r.Config()
		if err != nil {
			t.Fatalf("%s %s: %v", tc.cmd, tc.args, err)
		}
		a := c.Files[0].OnRotate[0]
		switch {
		case tc.dsn == "" && a.Exec == nil:
			t.Errorf("%s %s: became %+v, want the command kept", tc.cmd, tc.args, a)
		case tc.dsn != "" && (a.Postgres == nil || a.Postgres.DSN != tc.dsn):
			t.Errorf("%s %s: became %+v, want postgres dsn %q", tc.cmd, tc.args, a, tc.dsn)
		}
	}
}

// --owner gives the converted folder an owner (spiffe-helper has no such
// key), for a consumer that drops to another user, as mosquitto does.
func TestOwnerOptionGivesTheFolderAnOwner(t *testing.T) {
	r, err := Convert([]byte("cert_dir = \"/c\"\n"), Options{Getenv: noEnv, Owner: &config.Owner{UID: 107, GID: 113}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := r.Config()
	if err != nil {
		t.Fatal(err)
	}
	if o := c.Files[0].Owner; o == nil || *o != (filesink.Owner{UID: 107, GID: 113}) {
		t.Errorf("files[0].owner = %v, want 107:113", o)
	}
}
