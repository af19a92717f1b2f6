package config

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

func parseDefaultValidate(t *testing.T, yamlText string) (*Config, error) {
	t.Helper()
	c, err := Parse(strings.NewReader(yamlText))
	if err != nil {
		return nil, err
	}
	c.Default()
	return c, c.Validate()
}

// errorCase is a config that must be refused with an error containing
// every string in want (the key and the value, as a rule).
type errorCase struct {
	name, yaml string
	want       []string
}

func checkErrors(t *testing.T, cases []errorCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseDefaultValidate(t, tc.yaml)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	c, err := parseDefaultValidate(t, "files:\n  - dir: /certs\n")
	if err != nil {
		t.Fatal(err)
	}
	// Defaults come from the components, once, as the sections map onto them.
	if sc := c.SDS.WithDefaults(); sc.SocketPath != DefaultSDSSocket || sc.SocketMode != 0o600 || !c.SDS.On() {
		t.Errorf("sds defaults = %+v", sc)
	}
	if n := c.SDS.WithDefaults().Names; n.DefaultSVID != "default" || n.DefaultBundle != "ROOTCA" || n.AllBundles != "ALL" {
		t.Errorf("sds names = %+v", n)
	}
	if first := c.WorkloadAPI.WithDefaults().FirstUpdateTimeout; first != time.Minute {
		t.Errorf("first_update_timeout = %s", first)
	}
	f := c.Files[0].WithDefaults()
	if f.Layout != "spiffe-helper" || f.CertMode != 0o644 || f.KeyMode != 0o600 ||
		f.CertFileName != "svid.pem" || f.KeyFileName != "svid_key.pem" || f.BundleFileName != "svid_bundle.pem" {
		t.Errorf("folder defaults = %+v", f)
	}
	if a := c.Admin; a.Address() != "127.0.0.1:8081" || a.ServerConfig().MinValidityPercent != 10 || a.MinValidity != 0 || a.RequireSDSAck {
		t.Errorf("admin defaults = %+v (listen %q)", a, a.Address())
	}
}

// An absent admin.listen means loopback; an explicit "" turns it off.
func TestAdminListenOff(t *testing.T) {
	for yamlText, want := range map[string]string{
		"files:\n  - dir: /a\n":                                    "127.0.0.1:8081",
		"files:\n  - dir: /a\nadmin:\n  listen: \"\"\n":            "",
		"files:\n  - dir: /a\nadmin:\n  listen: 0.0.0.0:9090\n":    "0.0.0.0:9090",
		"files:\n  - dir: /a\nadmin:\n  min_validity_percent: 0\n": "127.0.0.1:8081",
	} {
		c, err := parseDefaultValidate(t, yamlText)
		if err != nil {
			t.Fatalf("%q: %v", yamlText, err)
		}
		if got := c.Admin.Address(); got != want {
			t.Errorf("%q: admin address %q, want %q", yamlText, got, want)
		}
	}
}

func TestFullConfig(t *testing.T) {
	c, err := parseDefaultValidate(t, `
workload_api:
  address: unix:///run/spire/sockets/agent.sock
  first_update_timeout: 10s
sds:
  socket: /run/sds-bridge/sds.sock
  socket_mode: "0660"
  default_svid_name: own
  default_bundle_name: ROOT
  default_all_bundles_name: EVERY
  disable_spiffe_cert_validation: true
files:
  - dir: /pg-certs
    layout: spiffe-helper
    cert_mode: "0640"
    key_mode: "0600"
    owner: "999:998"
    on_rotate:
      - signal: {pid_file: /pgdata/postmaster.pid}
      - exec: {command: ["/usr/bin/true", "x"], timeout: 3s}
      - postgres: {dsn: "host=/run/postgresql user=postgres password=pw"}
  - dir: /spiffe
    layout: spiffe
admin:
  listen: 127.0.0.1:8081
  min_validity: 5m
  min_validity_percent: 0
  require_sds_ack: true
`)
	if err != nil {
		t.Fatal(err)
	}
	if c.SDS.SocketMode != 0o660 || !c.SDS.Names.DisableSPIFFECertValidation || c.SDS.Names.AllBundles != "EVERY" {
		t.Errorf("sds = %+v", c.SDS)
	}
	a := c.Files[0].OnRotate
	if a[0].Signal.Sent() != syscall.SIGHUP || a[1].Exec.Limit() != 3*time.Second {
		t.Errorf("actions = %+v %+v", a[0].Signal, a[1].Exec)
	}
	if a[2].Postgres.DSN != "host=/run/postgresql user=postgres password=pw" || a[2].Postgres.Limit() != 10*time.Second {
		t.Errorf("postgres action = %+v", a[2].Postgres)
	}
	if ad := c.Admin; ad.MinValidity != 5*time.Minute || *ad.MinValidityPercent != 0 || !ad.RequireSDSAck {
		t.Errorf("admin = %+v", ad)
	}
	if o := c.Files[0].Owner; o == nil || o.UID != 999 || o.GID != 998 {
		t.Errorf("owner = %v", o)
	}
	if fc := c.Files[1].WithDefaults(); fc.CertFileName != "" {
		t.Errorf("spiffe layout got a spiffe-helper file name: %+v", fc)
	}
}

func TestErrorsNameKeyAndValue(t *testing.T) {
	checkErrors(t, []errorCase{
		{"unknown top key", "sdss: {}\n", []string{`unknown key "sdss"`, "line 1"}},
		{"unknown nested key", "files:\n  - dir: /a\n    keymode: \"0600\"\n", []string{`unknown key "keymode"`}},
		{"wrong type", "files: yes\n", []string{"line 1", "cannot unmarshal"}},
		{"decimal mode", "files:\n  - dir: /a\n    key_mode: 600\n", []string{"quoted octal string", "600"}},
		{"bad octal", "files:\n  - dir: /a\n    key_mode: \"0900\"\n", []string{`"0900"`, "octal"}},
		{"bad duration", "workload_api:\n  first_update_timeout: soon\n", []string{`"soon"`, "duration"}},
		{"relative dir", "files:\n  - dir: certs\n", []string{"files[0].dir", `"certs"`, "absolute"}},
		{"missing dir", "files:\n  - layout: spiffe\n", []string{"files[0].dir: missing"}},
		{"two sinks one dir", "files:\n  - dir: /a\n  - dir: /a/\n", []string{"files[1].dir", "files[0].dir"}},
		{"bad layout", "files:\n  - dir: /a\n    layout: pem\n", []string{"files[0].layout", `"pem"`}},
		{"world-readable key", "files:\n  - dir: /a\n    key_mode: \"0644\"\n", []string{"files[0].key_mode", `"0644"`}},
		{"bad owner", "files:\n  - dir: /a\n    owner: postgres\n", []string{"files[0].owner", `"postgres"`}},
		{"relative socket", "sds:\n  socket: sds.sock\n", []string{"sds.socket", `"sds.sock"`}},
		{"open socket", "sds:\n  socket_mode: \"0666\"\n", []string{"sds.socket_mode", `"0666"`}},
		{"bad address", "workload_api:\n  address: /tmp/agent.sock\n", []string{"workload_api.address", `"/tmp/agent.sock"`}},
		{"two actions in one", "files:\n  - dir: /a\n    on_rotate:\n      - signal: {pid_file: /p}\n        exec: {command: [x]}\n", []string{"files[0].on_rotate[0]", "exactly one"}},
		{"bad signal", "files:\n  - dir: /a\n    on_rotate:\n      - signal: {pid_file: /p, signal: SIGFOO}\n", []string{"files[0].on_rotate[0].signal.signal", `"SIGFOO"`}},
		{"empty command", "files:\n  - dir: /a\n    on_rotate:\n      - exec: {command: []}\n", []string{"files[0].on_rotate[0].exec.command"}},
		{"nothing to do", "sds:\n  enabled: false\n", []string{"nothing to deliver"}},
		{"postgres without dsn", "files:\n  - dir: /a\n    on_rotate:\n      - postgres: {timeout: 1s}\n", []string{"files[0].on_rotate[0].postgres.dsn: missing"}},
		{"postgres and exec", "files:\n  - dir: /a\n    on_rotate:\n      - postgres: {dsn: host=x}\n        exec: {command: [x]}\n", []string{"files[0].on_rotate[0]", "signal, exec, postgres"}},
		{"postgres bad timeout", "files:\n  - dir: /a\n    on_rotate:\n      - postgres: {dsn: host=x, timeout: -1s}\n", []string{"files[0].on_rotate[0].postgres.timeout", "-1s"}},
		{"admin listen without port", "files:\n  - dir: /a\nadmin:\n  listen: localhost\n", []string{"admin.listen", `"localhost"`}},
		{"negative swap interval", "files:\n  - dir: /a\n    min_swap_interval: -1s\n", []string{"files[0].min_swap_interval", "-1s"}},
		{"swap interval too long", "files:\n  - dir: /a\n    min_swap_interval: 2m\n", []string{"files[0].min_swap_interval", "2m0s", "at most 1m0s"}},
		{"admin percent too big", "files:\n  - dir: /a\nadmin:\n  min_validity_percent: 100\n", []string{"admin.min_validity_percent", "100"}},
		{"admin negative validity", "files:\n  - dir: /a\nadmin:\n  min_validity: -1m\n", []string{"admin.min_validity", "-1m"}},
		{"ack without sds", "sds:\n  enabled: false\nfiles:\n  - dir: /a\nadmin:\n  require_sds_ack: true\n", []string{"admin.require_sds_ack"}},
		{"shadowing name", "sds:\n  default_svid_name: spiffe://x\n", []string{"sds.default_svid_name", `"spiffe://x"`}},
		{"duplicate names", "sds:\n  default_bundle_name: ALL\n", []string{`"ALL"`, "also the value of"}},
	})
}

// A malformed DSN is reported by key, never by value: it may hold a password.
func TestDSNErrorsHideThePassword(t *testing.T) {
	for _, dsn := range []string{"postgres://u:hunter22@db:bad port/x", "hunter22"} {
		_, err := parseDefaultValidate(t, "files:\n  - dir: /a\n    on_rotate:\n      - postgres: {dsn: \""+dsn+"\"}\n")
		if err == nil || !strings.Contains(err.Error(), "files[0].on_rotate[0].postgres.dsn") || strings.Contains(err.Error(), "hunter22") {
			t.Errorf("dsn %q: error %v, want the key named and no password", dsn, err)
		}
	}
}

func TestParseSignal(t *testing.T) {
	for in, ok := range map[string]bool{"SIGHUP": true, "hup": true, "USR1": true, "KILL": false, "": false} {
		if _, err := ParseSignal(in); (err == nil) != ok {
			t.Errorf("ParseSignal(%q) err = %v", in, err)
		}
	}
}

// admin.liveness_path and admin.readiness_path default to /livez and
// /readyz and take another path, so a probe written for spiffe-helper
// (/live, /ready) keeps working.
func TestAdminProbePathsDefaultAndMove(t *testing.T) {
	c, err := parseDefaultValidate(t, "files:\n  - dir: /a\n")
	if err != nil {
		t.Fatal(err)
	}
	if ac := c.Admin.ServerConfig().WithDefaults(); ac.LivenessPath != "/livez" || ac.ReadinessPath != "/readyz" {
		t.Errorf("default paths %q %q, want /livez /readyz", ac.LivenessPath, ac.ReadinessPath)
	}
	c, err = parseDefaultValidate(t, "files:\n  - dir: /a\nadmin:\n  liveness_path: /live\n  readiness_path: /health/ready\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.Admin.LivenessPath != "/live" || c.Admin.ReadinessPath != "/health/ready" {
		t.Errorf("paths %q %q, want /live /health/ready", c.Admin.LivenessPath, c.Admin.ReadinessPath)
	}
}

// A probe path must be a plain path of its own: not relative, not a mux
// pattern, not an endpoint the admin listener already serves, not the
// other probe's.
func TestAdminProbePathsValidated(t *testing.T) {
	a := "files:\n  - dir: /a\nadmin:\n"
	checkErrors(t, []errorCase{
		{"relative", a + "  liveness_path: live\n", []string{"admin.liveness_path", `"live"`, "absolute"}},
		{"pattern", a + "  readiness_path: \"/ready/{x}\"\n", []string{"admin.readiness_path", `"/ready/{x}"`}},
		{"not clean", a + "  liveness_path: /live/\n", []string{"admin.liveness_path", `"/live/"`}},
		{"metrics", a + "  liveness_path: /metrics\n", []string{"admin.liveness_path", `"/metrics"`, "already served"}},
		{"status", a + "  readiness_path: /status\n", []string{"admin.readiness_path", `"/status"`, "already served"}},
		{"root", a + "  readiness_path: /\n", []string{"admin.readiness_path", `"/"`, "already served"}},
		{"each other", a + "  liveness_path: /health\n  readiness_path: /health\n", []string{"admin.readiness_path", `"/health"`, "admin.liveness_path"}},
		{"the other's default", a + "  liveness_path: /readyz\n", []string{"admin.readiness_path", `"/readyz"`, "admin.liveness_path"}},
	})
}
