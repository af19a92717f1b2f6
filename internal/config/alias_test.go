package config

import (
	"strings"
	"testing"
)

// YAML anchors, aliases and merge keys reach the same checks: a mode by
// alias is read as a mode, and a merged map's keys are checked too.
func TestAliasesAndMergesAreChecked(t *testing.T) {
	c, err := Parse(strings.NewReader("files:\n  - &f {dir: /a, key_mode: \"0640\", owner: \"1:2\"}\n  - <<: *f\n    dir: /b\n"))
	if err != nil {
		t.Fatal(err)
	}
	if f := c.Files[1]; f.Dir != "/b" || f.KeyMode != 0o640 || f.Owner == nil || f.Owner.GID != 2 {
		t.Errorf("files[1] = %+v, want /b with files[0]'s mode and owner", f.Config)
	}
	_, err = Parse(strings.NewReader("files:\n  - &f {dir: /a, key_mod: \"0640\"}\n  - <<: *f\n"))
	if err == nil || !strings.Contains(err.Error(), `unknown key "key_mod"`) {
		t.Errorf("Parse = %v, want key_mod unknown", err)
	}
}
