package admin

import (
	"strings"
	"testing"
	"time"
)

// TestPrintableEscapesWhatATerminalWouldActOn: control characters, bidi
// overrides and invalid UTF-8 come out as Go escapes; printable text,
// other scripts included, is kept as is.
func TestPrintableEscapesWhatATerminalWouldActOn(t *testing.T) {
	for in, want := range map[string]string{
		"envoy-1 sidecar~10.0.0.1": "envoy-1 sidecar~10.0.0.1",
		"nœud-é 节点":                "nœud-é 节点",
		"a\x1b[31mb\nc\td\re":      `a\x1b[31mb\nc\td\re`,
		"x\u202ey\x00z\x7f":        `x\u202ey\x00z\x7f`,
		"bad\xffutf8":              `bad\xffutf8`,
	} {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestStatusTextEscapesClientText: a document whose SDS client fields
// carry escape sequences and newlines (a peer forging lines in an
// operator's terminal; a document from a bridge that did not escape
// them) prints them escaped, each client on its own line.
func TestStatusTextEscapesClientText(t *testing.T) {
	forged := "\x1b[2J\x1b[32mREADY\nsds-bridge v1: READY, generation 9\r"
	st := Status{Version: "v", SDS: &SDSStatus{Clients: []ClientStatus{{
		Node: forged, Cluster: forged, Validation: "spiffe", ValidationReason: forged,
		AckedVersion: forged, NACKedVersion: forged, NACK: forged, NACKedAt: time.Now(),
	}}}}
	var b strings.Builder
	if err := st.WriteText(&b, time.Now()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if strings.ContainsAny(out, "\x1b\r") || strings.Contains(out, "\nsds-bridge v1: READY") {
		t.Errorf("the text carries the client's control characters:\n%q", out)
	}
	if !strings.Contains(out, `\x1b[2J\x1b[32mREADY\nsds-bridge v1: READY, generation 9\r`) {
		t.Errorf("the client's text is not shown escaped:\n%s", out)
	}
}

// A multi-line cause ends up on the operator's one line, with no double
// spaces and nothing dangling at either end.
func TestOneLineJoinsLinesWithSingleSpaces(t *testing.T) {
	for in, want := range map[string]string{
		"":                                 "",
		"ok":                               "ok",
		"  a\n\tb  \r\n c\n":               "a b c",
		"x509: malformed\ncertificate\n\n": "x509: malformed certificate",
	} {
		if got := oneLine(in); got != want {
			t.Errorf("oneLine(%q) = %q, want %q", in, got, want)
		}
	}
}
