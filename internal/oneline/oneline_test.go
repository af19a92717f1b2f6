package oneline

import "testing"

// A multi-line cause ends up on the operator's one line, with no double
// spaces and nothing dangling at either end.
func TestOfJoinsLinesWithSingleSpaces(t *testing.T) {
	for in, want := range map[string]string{
		"":                                 "",
		"ok":                               "ok",
		"  a\n\tb  \r\n c\n":               "a b c",
		"x509: malformed\ncertificate\n\n": "x509: malformed certificate",
	} {
		if got := Of(in); got != want {
			t.Errorf("Of(%q) = %q, want %q", in, got, want)
		}
	}
}
