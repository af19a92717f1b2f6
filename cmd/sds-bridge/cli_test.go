package main

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// No arguments: the usage on stderr, nothing on stdout, exit status 2,
// and no "exit status 2" line after the usage.
func TestNoArgumentsPrintsUsageAndExits2(t *testing.T) {
	var stdout, stderr syncBuffer
	code := exitStatus(run(t.Context(), nil, &stdout, &stderr), &stderr)
	if code != 2 {
		t.Errorf("exit status %d, want 2", code)
	}
	if stdout.String() != "" {
		t.Errorf("stdout %q, want nothing", stdout.String())
	}
	if stderr.String() != usage {
		t.Errorf("stderr is not exactly the usage:\n%s", stderr.String())
	}
}

// subcommands are every command run dispatches but envoy-bootstrap, which
// runs sds-bridge-envoy (cmd/sds-bridge-envoy tests its help and README row).
var subcommands = []string{"run", "dev", "wait", "check", "status", "import-spiffe-helper", "version"}

// Every subcommand answers -h and --help with its usage and exit status 0.
func TestHelpOnEverySubcommandExits0(t *testing.T) {
	for _, cmd := range subcommands {
		for _, h := range []string{"-h", "--help"} {
			var stdout, stderr syncBuffer
			code := exitStatus(run(t.Context(), []string{cmd, h}, &stdout, &stderr), &stderr)
			if code != 0 {
				t.Errorf("%s %s: exit status %d, want 0\n%s", cmd, h, code, stderr.String())
			}
			if out := stdout.String() + stderr.String(); !strings.Contains(out, "sds-bridge") {
				t.Errorf("%s %s printed no usage: %q", cmd, h, out)
			}
		}
	}
}

// The README's command table has a row for every subcommand, and that row
// names every flag the subcommand's -h lists.
func TestREADMECommandTableListsEverySubcommandAndFlag(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(readme), "| command | does |\n")
	if !ok {
		t.Fatal("README has no '| command | does |' table")
	}
	table, _, _ = strings.Cut(table, "\n\n")
	rows := map[string]string{}
	for _, line := range strings.Split(table, "\n") {
		if cmd, ok := strings.CutPrefix(line, "| `"); ok {
			name := strings.FieldsFunc(cmd, func(r rune) bool { return r == ' ' || r == '`' })[0]
			rows[name] = line
		}
	}
	flagLine := regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`)
	for _, cmd := range subcommands {
		row, ok := rows[cmd]
		if !ok {
			t.Errorf("README command table has no row for %s", cmd)
			continue
		}
		var help syncBuffer
		_ = run(t.Context(), []string{cmd, "-h"}, &help, &help)
		flags := flagLine.FindAllStringSubmatch(help.String(), -1)
		if cmd != "version" && len(flags) == 0 {
			t.Errorf("%s -h lists no flags (the test reads nothing):\n%s", cmd, help.String())
		}
		for _, f := range flags {
			if !strings.Contains(row, "--"+f[1]) {
				t.Errorf("README row for %s lacks --%s", cmd, f[1])
			}
		}
	}
}

// TestREADMEExitStatusTableCoversEveryCommand: the README's exit-status
// table has a row for every subcommand, so a script writer finds the
// codes of the command they call.
func TestREADMEExitStatusTableCoversEveryCommand(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(readme), "| command | exit status |\n")
	if !ok {
		t.Fatal("README has no '| command | exit status |' table")
	}
	table, _, _ = strings.Cut(table, "\n\n")
	named := map[string]bool{}
	for _, line := range strings.Split(table, "\n") {
		first, _, _ := strings.Cut(strings.TrimPrefix(line, "| "), " |")
		for _, m := range regexp.MustCompile("`([a-z-]+)`").FindAllStringSubmatch(first, -1) {
			named[m[1]] = true
		}
	}
	for _, cmd := range subcommands {
		if !named[cmd] {
			t.Errorf("README exit-status table has no row for %s", cmd)
		}
	}
}

// TestAWrongCommandLineExits2OnEveryCommand: a flag a command does not
// take exits 2 on every command that takes flags, apart from 1 (a bad
// state), so a script can tell a typo from a failed check.
func TestAWrongCommandLineExits2OnEveryCommand(t *testing.T) {
	for _, cmd := range subcommands {
		if cmd == "version" {
			continue // takes no flags and ignores its arguments
		}
		var out syncBuffer
		code := exitStatus(run(t.Context(), []string{cmd, "--no-such-flag"}, &out, &out), &out)
		if code != exitUsage {
			t.Errorf("%s --no-such-flag: exit status %d, want %d\n%s", cmd, code, exitUsage, out.String())
		}
	}
}

// dev's banner shows the admin address it bound: with --admin
// 127.0.0.1:0 that is the port it got (the one the log names), never :0.
func TestDevBannerShowsTheBoundAdminAddress(t *testing.T) {
	dir := testkit.ShortDir(t)
	d := startDev(t, dir, "--admin", "127.0.0.1:0", "--dir", filepath.Join(dir, "certs"), "--sds-socket", filepath.Join(dir, "sds.sock"))
	url := d.adminURL()
	if strings.HasSuffix(url, ":0") {
		t.Fatalf("the log names %s", url)
	}
	testkit.Eventually(t, "the banner's admin line", func() bool {
		return strings.Contains(d.stdout.String(), "  admin:              "+url+"  (/livez /readyz /metrics /status)\n")
	})
	if strings.Contains(d.stdout.String(), "127.0.0.1:0 ") {
		t.Errorf("the banner still shows port 0:\n%s", d.stdout.String())
	}
}

// A busy admin port fails start-up with a way out: --admin 127.0.0.1:0
// (any free port) or --admin "" (none).
func TestBusyAdminPortSuggestsAnotherAdminFlag(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dir := testkit.ShortDir(t)
	err = run(t.Context(), []string{"run", "--admin", l.Addr().String(), "--workload-api", "unix://" + filepath.Join(dir, "none.sock"),
		"--dir", filepath.Join(dir, "certs"), "--sds-socket", filepath.Join(dir, "sds.sock")}, io.Discard, io.Discard)
	if err == nil {
		t.Fatal("run started on a busy admin port")
	}
	for _, want := range []string{l.Addr().String(), "--admin 127.0.0.1:0", `--admin ""`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}
