package main

import (
	"strings"
	"testing"
)

// TestTheVersionCommandPrintsTheBuild: `version` and `--version` print the
// same line, which names the Go toolchain of this very binary.
func TestTheVersionCommandPrintsTheBuild(t *testing.T) {
	for _, arg := range []string{"version", "--version"} {
		var out strings.Builder
		if err := run(t.Context(), []string{arg}, &out, &out); err != nil {
			t.Fatal(err)
		}
		got := out.String()
		if !strings.HasPrefix(got, "sds-bridge ") || strings.TrimSpace(got) == "sds-bridge dev" || !strings.Contains(got, "go1.") {
			t.Errorf("%s printed %q", arg, got)
		}
	}
}
