package config

import (
	"testing"
)

func TestAllowedPeers(t *testing.T) {
	c, err := parseDefaultValidate(t, "sds:\n  socket_mode: \"0660\"\n  allowed_uids: [101, 0]\n  allowed_gids: [999]\n")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.SDS.AllowedUIDs; len(got) != 2 || got[0] != 101 || got[1] != 0 {
		t.Errorf("allowed_uids = %v", got)
	}
	if got := c.SDS.AllowedGIDs; len(got) != 1 || got[0] != 999 {
		t.Errorf("allowed_gids = %v", got)
	}
	c, err = parseDefaultValidate(t, "sds: {}\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.SDS.AllowedUIDs != nil || c.SDS.AllowedGIDs != nil {
		t.Errorf("allow-lists defaulted to %v %v; empty must stay empty (the sds package's safe default)", c.SDS.AllowedUIDs, c.SDS.AllowedGIDs)
	}
}

func TestAllowWorldWritableDir(t *testing.T) {
	c, err := parseDefaultValidate(t, "files:\n  - dir: /a\n  - dir: /tmp/shared\n    allow_world_writable_dir: true\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.Files[0].AllowWorldWritableDir || !c.Files[1].AllowWorldWritableDir {
		t.Errorf("allow_world_writable_dir = %t, %t; want false by default", c.Files[0].AllowWorldWritableDir, c.Files[1].AllowWorldWritableDir)
	}
	if _, err := parseDefaultValidate(t, "files:\n  - dir: /a\n    allow_world_writable_dir: maybe\n"); err == nil {
		t.Error("allow_world_writable_dir: maybe accepted")
	}
}

func TestHardeningErrors(t *testing.T) {
	checkErrors(t, []errorCase{
		{"negative uid", "sds:\n  allowed_uids: [101, -1]\n", []string{"sds.allowed_uids[1]", "-1"}},
		{"uid out of range", "sds:\n  allowed_gids: [4294967295]\n", []string{"sds.allowed_gids[0]", "4294967295"}},
		{"uid as a name", "sds:\n  allowed_uids: [envoy]\n", []string{"line 2", "envoy"}},
		{"uids not a list", "sds:\n  allowed_uids: 101\n", []string{"line 2"}},
		{"misspelled key", "sds:\n  allowed_uid: [101]\n", []string{`unknown key "allowed_uid"`}},
		{"world-writable key", "files:\n  - dir: /a\n    key_mode: \"0777\"\n", []string{"files[0].key_mode", `"0777"`}},
		{"world-writable cert", "files:\n  - dir: /a\n    cert_mode: \"0666\"\n", []string{"files[0].cert_mode", `"0666"`}},
		{"group-writable socket for all", "sds:\n  socket_mode: \"0777\"\n", []string{"sds.socket_mode", `"0777"`}},
	})
}
