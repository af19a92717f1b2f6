package config

import (
	"strings"
	"testing"

	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/sds"
)

// A name is taken for a SPIFFE ID exactly when go-spiffe (and so SPIRE's
// SDS) parses it as one: "spiffe://" in lower case. Config and the SDS
// server agree, because config asks sds.
func TestSPIFFEPrefixRuleIsSDSsOwn(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{{"spiffe://x", false}, {"SPIFFE://x", true}, {"Spiffe://example.org", true}, {"svid", true}} {
		_, cfgErr := parseDefaultValidate(t, "sds:\n  default_svid_name: \""+tc.name+"\"\n")
		sdsErr := sds.Names{DefaultSVID: tc.name}.WithDefaults().Validate()
		if (cfgErr == nil) != tc.ok || (sdsErr == nil) != tc.ok {
			t.Errorf("%q: config %v, sds %v; want accepted %t by both", tc.name, cfgErr, sdsErr, tc.ok)
		}
		if cfgErr != nil && !strings.Contains(cfgErr.Error(), "sds.default_svid_name") {
			t.Errorf("%q: %v does not name sds.default_svid_name", tc.name, cfgErr)
		}
	}
}

// "none" is for supervise.renew_signal: a signal action must send one.
func TestASignalActionMustSendASignal(t *testing.T) {
	checkErrors(t, []errorCase{
		{"none", "files:\n  - dir: /a\n    on_rotate:\n      - signal: {pid_file: /p, signal: none}\n", []string{"files[0].on_rotate[0].signal.signal", "none"}},
	})
}

// An unknown signal name is refused with the hint "(or none)" only where
// none is taken: supervise.renew_signal, not a signal action.
func TestTheNoneHintIsGivenOnlyWhereNoneIsTaken(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		hint bool
	}{
		{"files:\n  - dir: /a\n    on_rotate:\n      - signal: {pid_file: /p, signal: SIGFOO}\n", false},
		{"files:\n  - dir: /a\nsupervise:\n  command: [x]\n  renew_signal: SIGFOO\n", true},
	} {
		_, err := Parse(strings.NewReader(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), `"SIGFOO"`) {
			t.Fatalf("Parse(%q) = %v, want SIGFOO refused", tc.yaml, err)
		}
		if hint := strings.Contains(err.Error(), "(or none)"); hint != tc.hint {
			t.Errorf("Parse(%q) = %v: hint (or none) %v, want %v", tc.yaml, err, hint, tc.hint)
		}
	}
}

// JWT file names starting with "." are refused by the component that
// writes them (jwtfiles), and config reports it under the YAML key.
func TestHiddenJWTFileNamesAreRefusedByKey(t *testing.T) {
	checkErrors(t, []errorCase{
		{"token", "files:\n  - dir: /a\n    jwt_svids: [{audience: x, file_name: .t}]\n", []string{"files[0].jwt_svids[0].file_name", `".t"`}},
		{"bundle", "files:\n  - dir: /a\n    jwt_bundle_file_name: .b\n", []string{"files[0].jwt_bundle_file_name", `".b"`}},
	})
}

// The owner is parsed once, when the YAML is decoded, with the line.
func TestOwnerIsParsedAtDecode(t *testing.T) {
	_, err := Parse(strings.NewReader("files:\n  - dir: /a\n    owner: \"1:x\"\n"))
	if err == nil || !strings.Contains(err.Error(), "files[0].owner") || !strings.Contains(err.Error(), "line 3") {
		t.Fatalf("Parse = %v, want files[0].owner refused at line 3", err)
	}
	c, err := Parse(strings.NewReader("files:\n  - dir: /a\n    owner: \"70:71\"\n"))
	if err != nil || c.Files[0].Owner == nil || *c.Files[0].Owner != (filesink.Owner{UID: 70, GID: 71}) {
		t.Fatalf("Parse = %+v, %v; want owner 70:71", c, err)
	}
	if jf := c.Files[0].JWTFolder(); jf.Owner == nil || *jf.Owner != *c.Files[0].Owner {
		t.Errorf("jwtfiles owner = %+v, want 70:71", jf.Owner)
	}
}
