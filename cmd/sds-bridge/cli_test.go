package main

import (
	"strings"
	"testing"
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

// subcommands are every command run dispatches.
var subcommands = []string{"run", "dev", "wait", "check", "status", "envoy-bootstrap", "import-spiffe-helper", "version"}

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
