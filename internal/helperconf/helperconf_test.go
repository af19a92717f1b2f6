package helperconf

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/hashicorp/hcl"
	"github.com/hashicorp/hcl/hcl/ast"

	"github.com/sds-bridge/sds-bridge/internal/config"
)

var update = flag.Bool("update", false, "rewrite the golden .yaml files from the current output")

// golden is what a helper.conf turns into: the YAML, then the notes the
// command prints on stderr.
func golden(r *Result) []byte {
	var b bytes.Buffer
	b.Write(r.YAML)
	b.WriteString("# --- notes printed on stderr ---\n")
	for _, n := range r.Notes {
		b.WriteString("# " + n.String() + "\n")
	}
	if keys := r.Unsupported(); len(keys) > 0 {
		b.WriteString("# --- import-spiffe-helper refuses it without --allow-unsupported: " + strings.Join(keys, ", ") + " ---\n")
	}
	return b.Bytes()
}

func TestConvertGolden(t *testing.T) {
	confs, err := filepath.Glob("testdata/*.conf")
	if err != nil || len(confs) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, conf := range confs {
		t.Run(filepath.Base(conf), func(t *testing.T) {
			src, err := os.ReadFile(conf)
			if err != nil {
				t.Fatal(err)
			}
			r, err := Convert(src, Options{BaseDir: "/srv/app", Getenv: noEnv})
			if err != nil {
				t.Fatalf("Convert: %v", err)
			}
			// refused-*.conf hold values run refuses: the conversion is
			// refused, naming each; every other file converts to a config
			// the bridge accepts as it is.
			c, cerr := r.Config()
			refused := strings.HasPrefix(filepath.Base(conf), "refused-")
			want := strings.TrimSuffix(conf, ".conf") + ".yaml"
			got := golden(r)
			if cerr != nil {
				got = append(got, "# --- refused ---\n"...)
				for _, l := range strings.Split(cerr.Error(), "\n") {
					got = append(got, "# "+l+"\n"...)
				}
			}
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
			if refused {
				if cerr == nil {
					t.Fatalf("Config accepted %s:\n%s", conf, r.YAML)
				}
				return
			}
			if cerr != nil {
				t.Fatalf("Config: %v\n%s", cerr, r.YAML)
			}
			// Config checks a copy; the same YAML, checked here by hand.
			c.Default()
			if err := c.Validate(); err != nil {
				t.Fatalf("Validate: %v\n%s", err, r.YAML)
			}
			if len(c.Files) != 1 {
				t.Errorf("%d folders, want 1", len(c.Files))
			}
		})
	}
}

// Every key spiffe-helper documents appears in some testdata file, so the
// golden files show what each one becomes.
func TestTestdataCoversEveryKey(t *testing.T) {
	confs, _ := filepath.Glob("testdata/*.conf")
	seen := map[string]bool{}
	for _, conf := range confs {
		src, err := os.ReadFile(conf)
		if err != nil {
			t.Fatal(err)
		}
		f, err := hcl.ParseBytes(src)
		if err != nil {
			t.Fatalf("%s: %v", conf, err)
		}
		for _, item := range f.Node.(*ast.ObjectList).Items {
			if k, ok := item.Keys[0].Token.Value().(string); ok {
				seen[k] = true
			}
		}
	}
	for _, k := range knownKeys {
		if !seen[k] {
			t.Errorf("no testdata helper.conf sets %s", k)
		}
	}
}

func TestDecimalModesConvertedAsSpiffeHelperAppliedThem(t *testing.T) {
	for _, tc := range []struct {
		line, want string
		loud       bool
	}{
		{"cert_file_mode = 444", `cert_mode: "0674"`, true},
		{"cert_file_mode = 0444", `cert_mode: "0444"`, false},
		{`cert_file_mode = "0440"`, `cert_mode: "0440"`, false},
		{"key_file_mode = 384", `key_mode: "0600"`, true},      // 384 = 0600: someone did the arithmetic
		{"key_file_mode = 0644", `key_mode: "0640"`, true},     // world-readable key: refused by the bridge
		{"jwt_svid_file_mode = 416", `jwt_mode: "0640"`, true}, // 416 = 0640
		{"key_file_mode = 600", `key_mode: "0530"`, true},      // 600 = 01130: the owner could not read it
		{"cert_file_mode = 0204", `cert_mode: "0604"`, true},   // write-only for the owner
		{"jwt_bundle_file_mode = 04", `jwt_bundle_mode: "0404"`, true},
		{`cert_file_mode = "abc"`, "", true}, // not a number: the default, noted
	} {
		t.Run(tc.line, func(t *testing.T) {
			r, err := Convert([]byte("cert_dir = \"/c\"\n"+tc.line+"\n"), Options{BaseDir: "/"})
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == "" && strings.Contains(string(r.YAML), "cert_mode:") {
				t.Errorf("output sets cert_mode:\n%s", r.YAML)
			}
			if !strings.Contains(string(r.YAML), tc.want) {
				t.Errorf("output lacks %s:\n%s", tc.want, r.YAML)
			}
			key := strings.Fields(tc.line)[0]
			loud := slices.ContainsFunc(r.Notes, func(n Note) bool { return n.Key == key })
			if loud != tc.loud {
				t.Errorf("a note about %s: %v, want %v (notes %v)", key, loud, tc.loud, r.Notes)
			}
		})
	}
}

// The notes on a file mode say, word for word, how spiffe-helper read it and
// what the bridge writes instead; the YAML line is the mode that results.
func TestModeFixesAreNotedWordForWord(t *testing.T) {
	for _, tc := range []struct {
		line, yaml string
		notes      []string
	}{
		{"cert_file_mode = 444", "cert_mode: \"0674\" # cert_file_mode = 444", []string{
			"444 has no leading 0, so spiffe-helper read it as DECIMAL 444 = octal 0674: it created files with mode 0674 (less its umask), not 0444. Kept as spiffe-helper applied it; you probably meant \"0444\"",
		}},
		{"key_file_mode = 384", "key_mode: \"0600\" # key_file_mode = 384", []string{
			"384 has no leading 0, so spiffe-helper read it as DECIMAL 384 = octal 0600: it created files with mode 0600 (less its umask), not 0384. Kept as spiffe-helper applied it; you probably meant \"0384\"",
		}},
		{"key_file_mode = 0644", "key_mode: \"0640\" # key_file_mode = 0644", []string{
			"0644 gives every user access to a private credential, which the bridge refuses; using 0640",
		}},
		{"key_file_mode = 600", "key_mode: \"0530\" # key_file_mode = 600", []string{
			"600 has no leading 0, so spiffe-helper read it as DECIMAL 600 = octal 1130: it created files with mode 0130 (less its umask), not 0600. Kept as spiffe-helper applied it; you probably meant \"0600\"",
			"0130 does not let the file's owner read it, which the bridge refuses; using 0530",
		}},
		{"cert_file_mode = 0204", "cert_mode: \"0604\" # cert_file_mode = 0204", []string{
			"0204 does not let the file's owner read it, which the bridge refuses; using 0604",
		}},
		{"jwt_bundle_file_mode = 04", "jwt_bundle_mode: \"0404\" # jwt_bundle_file_mode = 04", []string{
			"0004 does not let the file's owner read it, which the bridge refuses; using 0404",
		}},
		{"cert_file_mode = \"abc\"", "", []string{
			"\"abc\" is not a positive number (spiffe-helper refuses it); the bridge's default 0644 is used",
		}},
		{"cert_file_mode = 01000", "", []string{
			"01000 leaves no permission bits; the bridge's default 0644 is used",
		}},
		{"cert_file_mode = 0666", "cert_mode: \"0664\" # cert_file_mode = 0666", []string{
			"0666 lets every user replace the file, which the bridge refuses; using 0664",
		}},
		{"jwt_svid_file_mode = 0707", "jwt_mode: \"0700\" # jwt_svid_file_mode = 0707", []string{
			"0707 gives every user access to a private credential, which the bridge refuses; using 0700",
		}},
		{"key_file_mode = 0007", "key_mode: \"0600\" # key_file_mode = 0007", []string{
			"0007 gives every user access to a private credential, which the bridge refuses; using 0600",
		}},
		{"cert_file_mode = 0002", "cert_mode: \"0644\" # cert_file_mode = 0002", []string{
			"0002 lets every user replace the file, which the bridge refuses; using 0644",
		}},
		{"cert_file_mode = 512", "", []string{
			"512 has no leading 0, so spiffe-helper read it as DECIMAL 512 = octal 1000: it created files with mode 0000 (less its umask), not 0512. Kept as spiffe-helper applied it; you probably meant \"0512\"",
			"512 leaves no permission bits; the bridge's default 0644 is used",
		}},
	} {
		t.Run(tc.line, func(t *testing.T) {
			r, err := Convert([]byte("cert_dir = \"/c\"\n"+tc.line+"\n"), Options{BaseDir: "/"})
			if err != nil {
				t.Fatal(err)
			}
			key := strings.Fields(tc.line)[0]
			var notes []string
			for _, n := range r.Notes {
				if n.Key == key {
					notes = append(notes, n.Text)
				}
			}
			if !slices.Equal(notes, tc.notes) {
				t.Errorf("notes about %s:\n%q\nwant\n%q", key, notes, tc.notes)
			}
			if tc.yaml == "" {
				if strings.Contains(string(r.YAML), " # "+key) {
					t.Errorf("output sets a mode for %s:\n%s", key, r.YAML)
				}
			} else if !strings.Contains(string(r.YAML), "    "+tc.yaml+"\n") {
				t.Errorf("output lacks %s:\n%s", tc.yaml, r.YAML)
			}
		})
	}
}

func TestSplitCmdArgsLikeSpiffeHelper(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		note bool
	}{
		{"", nil, false},
		{"-s reload", []string{"-s", "reload"}, false},
		{`-c "kill -HUP 1"`, []string{"-c", "kill -HUP 1"}, true},
		{`-c 'kill -HUP 1'`, []string{"-c", "'kill", "-HUP", "1'"}, true},
		{"a  b", []string{"a", "", "b"}, true},
		{"--path=$HOME", []string{"--path=$HOME"}, true},
		{"-c", []string{"-c"}, false},
		{`a"b c`, []string{`a"b`, "c"}, true}, // spiffe-helper cannot parse it; split at spaces
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, note := splitCmdArgs(tc.in, false)
			if !slices.Equal(got, tc.want) {
				t.Errorf("args %q, want %q", got, tc.want)
			}
			if (note != "") != tc.note {
				t.Errorf("note %q, want one: %v", note, tc.note)
			}
		})
	}
}

func TestConvertRefusesInvalidHCL(t *testing.T) {
	for _, src := range []string{"cert_dir = [", "cert_dir = {", "daemon_mode = \"maybe\"", "jwt_svids = 3"} {
		if _, err := Convert([]byte(src), Options{BaseDir: "/"}); err == nil {
			t.Errorf("Convert(%q) = nil error", src)
		}
	}
}

func BenchmarkConvert(b *testing.B) {
	src, err := os.ReadFile("testdata/jwt-init.conf")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := Convert(src, Options{BaseDir: "/srv/app"}); err != nil {
			b.Fatal(err)
		}
	}
}

// A Windows agent_address (a named pipe, in either spelling) is refused by
// name, never joined to the base directory as if it were a socket path.
func TestWindowsAgentAddressIsRefusedNotMadeAPath(t *testing.T) {
	for _, addr := range []string{`\\.\pipe\spire-agent\public\api`, `npipe:spire-agent\public\api`, `//./pipe/agent`, `NPIPE:agent`} {
		src := "cert_dir = \"/c\"\nagent_address = " + strconv.Quote(addr) + "\n"
		r, err := Convert([]byte(src), Options{BaseDir: "/srv/app"})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(r.Unsupported(), []string{"agent_address"}) {
			t.Errorf("%s: unsupported keys %v, want [agent_address]", addr, r.Unsupported())
		}
		if strings.Contains(string(r.YAML), "address:") || strings.Contains(string(r.YAML), "/srv/app") {
			t.Errorf("%s became an address:\n%s", addr, r.YAML)
		}
		if !strings.Contains(r.Notes[0].Text, "Windows named pipe") {
			t.Errorf("%s: note %q does not say why", addr, r.Notes[0])
		}
	}
}

// daemon_mode = false maps to `run --once` (Result.Once) and says so;
// true and unset keep the daemon.
func TestDaemonModeFalseMeansOnce(t *testing.T) {
	for _, tc := range []struct {
		line string
		want bool
	}{
		{"daemon_mode = false", true},
		{"daemon_mode = true", false},
		{"", false},
	} {
		r, err := Convert([]byte("agent_address = \"/run/spire/agent.sock\"\ncert_dir = \"/certs\"\n"+tc.line+"\n"), Options{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Once != tc.want {
			t.Errorf("%q: Once = %v, want %v", tc.line, r.Once, tc.want)
		}
		for _, n := range r.Notes {
			if n.Key != "daemon_mode" {
				continue
			}
			if !tc.want || n.Unsupported || !strings.Contains(n.Text, "run --once") {
				t.Errorf("%q: note %s, want one that says run --once and is not 'not supported'", tc.line, n)
			}
		}
		if tc.want && !strings.Contains(string(r.YAML), "run --once") {
			t.Errorf("%q: YAML does not tell to run with --once:\n%s", tc.line, r.YAML)
		}
	}
}

// spiffe-helper signals and runs cmd after JWT-SVID updates as well as
// X.509 ones: with jwt_svids, every converted action runs on both events;
// without, on X.509 swaps only (the bridge's default).
func TestActionsRunOnJWTWhenTheHelperHasJWTSVIDs(t *testing.T) {
	const actions = "agent_address = \"/run/spire/agent.sock\"\ncert_dir = \"/certs\"\npid_file_name = \"/run/app.pid\"\nrenew_signal = \"SIGHUP\"\ncmd = \"/bin/reload\"\n"
	for _, tc := range []struct {
		name, extra string
		jwt         bool
	}{
		{"jwt_svids", "jwt_svids = [{jwt_audience = \"a\", jwt_svid_file_name = \"a.token\"}]\n", true},
		{"x509 only", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Convert([]byte(actions+tc.extra), Options{})
			if err != nil {
				t.Fatal(err)
			}
			c, err := r.Config()
			if err != nil {
				t.Fatalf("Config: %v\n%s", err, r.YAML)
			}
			c.Default()
			if got := len(c.Files[0].OnRotate); got != 2 {
				t.Fatalf("%d actions, want the signal and the exec:\n%s", got, r.YAML)
			}
			for i, a := range c.Files[0].OnRotate {
				if !a.RunsOn(config.EventX509) || a.RunsOn(config.EventJWT) != tc.jwt {
					t.Errorf("on_rotate[%d].on = %v, want x509, and jwt %v:\n%s", i, a.On, tc.jwt, r.YAML)
				}
			}
		})
	}
}

// A long-running cmd that spiffe-helper signals (renew_signal without
// pid_file_name) becomes the supervised program, with cmd_args split as
// spiffe-helper splits them; nothing is left unsupported, and run accepts
// the result. Under daemon_mode = false (no program runs with --once) or
// with a signal the bridge cannot send it stays NOT SUPPORTED.
func TestLongRunningCmdWithRenewSignalIsSupervised(t *testing.T) {
	base := "cert_dir = \"/certs\"\ncmd = \"mosquitto\"\ncmd_args = \"-c /etc/mosquitto/mosquitto.conf\"\n"
	r, err := Convert([]byte(base+"renew_signal = \"hup\"\n"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if keys := r.Unsupported(); len(keys) != 0 {
		t.Fatalf("unsupported %v:\n%s", keys, r.YAML)
	}
	c, err := r.Config()
	if err != nil {
		t.Fatalf("run refuses the conversion: %v\n%s", err, r.YAML)
	}
	if got := c.Supervise.Command; !slices.Equal(got, []string{"mosquitto", "-c", "/etc/mosquitto/mosquitto.conf"}) || c.Supervise.RenewSignal != config.Signal(syscall.SIGHUP) {
		t.Fatalf("supervise = %+v", c.Supervise)
	}
	if len(c.Files) != 1 || len(c.Files[0].OnRotate) != 0 {
		t.Fatalf("files = %+v, want one folder and no reload action (the signal goes to the child)", c.Files)
	}
	for _, extra := range []string{"renew_signal = \"SIGHUP\"\ndaemon_mode = false\n", "renew_signal = \"SIGWINCH\"\n"} {
		r, err := Convert([]byte(base+extra), Options{})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(r.Unsupported(), "cmd") {
			t.Errorf("%q: cmd not reported unsupported:\n%s", extra, r.YAML)
		}
		if c, err := r.Config(); err != nil || c.Supervise.On() {
			t.Errorf("%q: supervise = %+v (%v), want none", extra, c.Supervise, err)
		}
	}
}

// noEnv is an environment without SPIFFE_ENDPOINT_SOCKET or
// SPIRE_AGENT_ADDRESS, whatever the test's own.
func noEnv(string) string { return "" }
