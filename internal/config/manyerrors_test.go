package config

import (
	"fmt"
	"strings"
	"testing"
)

// wrongUIDs is a config whose sds.allowed_uids holds n names instead of
// numbers: n wrong-type errors (249 KB for 20,000 in issue 19).
func wrongUIDs(n int) string {
	var b strings.Builder
	b.WriteString("sds:\n  allowed_uids: [")
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "user%d", i)
	}
	b.WriteString("]\n")
	return b.String()
}

// A config with 20,000 wrongly typed values is refused with the first ten
// errors, each naming its key, and a count of the others — not 20,000
// lines.
func TestManyWrongValuesReportTenErrorsAndCountTheRest(t *testing.T) {
	_, err := Parse(strings.NewReader(wrongUIDs(20000)))
	if err == nil {
		t.Fatal("20,000 names as uids accepted")
	}
	msg := err.Error()
	if lines := strings.Count(msg, "\n") + 1; lines != maxTypeErrors+1 {
		t.Errorf("the error has %d lines, want %d:\n%s", lines, maxTypeErrors+1, msg)
	}
	for _, want := range []string{"sds.allowed_uids[0]: line 2", "sds.allowed_uids[9]: line 2", "and 19990 more"} {
		if !strings.Contains(msg, want) {
			t.Errorf("the error does not say %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "allowed_uids[10]") {
		t.Errorf("the error reports more than %d values:\n%s", maxTypeErrors, msg)
	}
}

// Refusing a config costs time linear in its size, whatever the number of
// errors: four times the wrong values cost at most about four times the
// allocations (the document is parsed once to find the keys; it used to
// be parsed again per error, 615 s of CPU for 20,000). Allocations, not
// time: a count the machine's load cannot change.
func TestRefusingManyWrongValuesCostsLinearWork(t *testing.T) {
	allocs := func(n int) float64 {
		data := wrongUIDs(n)
		return testing.AllocsPerRun(1, func() {
			if _, err := Parse(strings.NewReader(data)); err == nil {
				t.Fatal("names as uids accepted")
			}
		})
	}
	small, big := allocs(500), allocs(2000)
	if ratio := big / small; ratio > 6 {
		t.Errorf("2,000 wrong values cost %.0f allocations, 500 cost %.0f: ×%.1f for ×4 the input, want linear (≤ ×6)", big, small, ratio)
	} else {
		t.Logf("allocations: %.0f for 500 wrong values, %.0f for 2,000 (×%.1f)", small, big, ratio)
	}
}

// BenchmarkRefuse20000WrongValues is the config of issue 19's fault 12
// (615 s of CPU before the fix).
func BenchmarkRefuse20000WrongValues(b *testing.B) {
	data := wrongUIDs(20000)
	for b.Loop() {
		if _, err := Parse(strings.NewReader(data)); err == nil {
			b.Fatal("accepted")
		}
	}
}
