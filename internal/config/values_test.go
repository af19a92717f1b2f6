package config

import (
	"testing"
)

// ParseOwner takes only ids chown can apply: 4294967295 is (uid_t)-1,
// "leave unchanged", and anything larger would be truncated to 32 bits —
// "4294967296:0" must not become root.
func TestParseOwnerRefusesIDsChownCannotApply(t *testing.T) {
	for _, tc := range []struct {
		in       string
		uid, gid int
		ok       bool
	}{
		{"0:0", 0, 0, true},
		{"999:998", 999, 998, true},
		{"4294967294:4294967294", 4294967294, 4294967294, true},
		{"4294967295:0", 0, 0, false},
		{"0:4294967295", 0, 0, false},
		{"4294967296:0", 0, 0, false},
		{"0:4294967296", 0, 0, false},
		{"18446744073709551616:0", 0, 0, false},
		{"-1:0", 0, 0, false},
		{"+5:0", 0, 0, false},
		{":0", 0, 0, false},
		{"999", 0, 0, false},
	} {
		uid, gid, err := ParseOwner(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseOwner(%q) = %d, %d, %v; want ok %v", tc.in, uid, gid, err, tc.ok)
			continue
		}
		if tc.ok && (uid != tc.uid || gid != tc.gid) {
			t.Errorf("ParseOwner(%q) = %d:%d, want %d:%d", tc.in, uid, gid, tc.uid, tc.gid)
		}
	}
}

// An owner chown cannot apply is refused by key and value.
func TestOwnerOutOfRangeIsRefusedByKey(t *testing.T) {
	checkErrors(t, []errorCase{
		{"uid 2^32", "files:\n  - dir: /a\n    owner: \"4294967296:0\"\n", []string{"files[0].owner", `"4294967296:0"`, "uid 4294967296"}},
		{"gid is (gid_t)-1", "files:\n  - dir: /a\n    owner: \"0:4294967295\"\n", []string{"files[0].owner", `"0:4294967295"`, "gid 4294967295"}},
		{"second folder", "files:\n  - dir: /a\n  - dir: /b\n    owner: \"1:99999999999\"\n", []string{"files[1].owner", `"1:99999999999"`}},
	})
}

// Every mode a file is written with must let its owner read it: a
// certificate, key or token its owner cannot read is useless, and filesink
// would refuse the key only at start, without the key's name.
func TestModesWithoutOwnerReadAreRefused(t *testing.T) {
	checkErrors(t, []errorCase{
		{"cert not owner-readable", "files:\n  - dir: /a\n    cert_mode: \"0200\"\n", []string{"files[0].cert_mode", `"0200"`, "owner"}},
		{"cert group-readable only", "files:\n  - dir: /a\n    cert_mode: \"0044\"\n", []string{"files[0].cert_mode", `"0044"`}},
		{"key not owner-readable", "files:\n  - dir: /a\n    key_mode: \"0060\"\n", []string{"files[0].key_mode", `"0060"`, "owner"}},
		{"token not owner-readable", "files:\n  - dir: /a\n    jwt_mode: \"0240\"\n", []string{"files[0].jwt_mode", `"0240"`, "owner"}},
		{"jwt bundle not owner-readable", "files:\n  - dir: /a\n    jwt_bundle_mode: \"0044\"\n", []string{"files[0].jwt_bundle_mode", `"0044"`, "owner"}},
	})
}

// Every Duration key names itself and its value when the value overflows
// time.Duration or is not a scalar (yaml.v3 gives the unmarshaler no key).
func TestBadDurationsNameKeyAndValue(t *testing.T) {
	action := "files:\n  - dir: /a\n    on_rotate:\n      - "
	checkErrors(t, []errorCase{
		{"overflow", "workload_api:\n  first_update_timeout: 999999999999h\n", []string{"workload_api.first_update_timeout", `"999999999999h"`, "out of range"}},
		{"overflow in flow style", action + "exec: {command: [x], timeout: 99999999999999m}\n", []string{"files[0].on_rotate[0].exec.timeout", `"99999999999999m"`, "out of range"}},
		{"map", action + "postgres:\n          dsn: host=x\n          timeout: {s: 1}\n", []string{"files[0].on_rotate[0].postgres.timeout", "map", "{s: 1}"}},
		{"list", "files:\n  - dir: /a\nadmin:\n  min_validity: [1s, 2s]\n", []string{"admin.min_validity", "list", "[1s, 2s]"}},
		{"second folder, second action", "files:\n  - dir: /a\n  - dir: /b\n    on_rotate:\n      - exec: {command: [x]}\n      - exec: {command: [y], timeout: 1e9h}\n", []string{"files[1].on_rotate[1].exec.timeout", `"1e9h"`}},
		{"no unit", "workload_api:\n  first_update_timeout: 30\n", []string{"workload_api.first_update_timeout", `"30"`, "unit"}},
		{"mode as a map", "files:\n  - dir: /a\n    key_mode: {a: b}\n", []string{"files[0].key_mode", "{a: b}"}},
	})
}

// Validate reports the same errors in the same order every time (no map
// iteration decides it), and the same key is the duplicate every time.
func TestValidateErrorsComeInAStableOrder(t *testing.T) {
	const yamlText = "sds:\n  allowed_uids: [-1]\n  allowed_gids: [-2]\n  default_svid_name: X\n  default_bundle_name: X\n  default_all_bundles_name: X\n"
	_, first := parseDefaultValidate(t, yamlText)
	if first == nil {
		t.Fatal("no error")
	}
	want := "sds.allowed_uids[0]: -1 is not a valid id\nsds.allowed_gids[0]: -2 is not a valid id\n" +
		"sds.default_bundle_name: \"X\" is also the value of sds.default_svid_name\n" +
		"sds.default_all_bundles_name: \"X\" is also the value of sds.default_svid_name"
	if first.Error() != want {
		t.Errorf("errors:\n%s\nwant:\n%s", first, want)
	}
	for range 50 {
		if _, err := parseDefaultValidate(t, yamlText); err.Error() != first.Error() {
			t.Fatalf("errors changed order:\n%s\nthen:\n%s", first, err)
		}
	}
}

// The X.509 file names get the checks filesink would make at start, but by
// key: "." is the folder itself, and two keys cannot name one file.
func TestX509FileNamesAreCheckedByKey(t *testing.T) {
	checkErrors(t, []errorCase{
		{"dot", "files:\n  - dir: /a\n    cert_file_name: \".\"\n", []string{"files[0].cert_file_name", `"."`}},
		{"key over cert", "files:\n  - dir: /a\n    key_file_name: svid.pem\n", []string{"files[0].key_file_name", `"svid.pem"`, "cert_file_name"}},
		{"bundle over key", "files:\n  - dir: /a\n  - dir: /b\n    key_file_name: k\n    bundle_file_name: k\n", []string{"files[1].bundle_file_name", `"k"`, "key_file_name"}},
	})
}

// A value of the wrong type names its key too, not only its line.
func TestWrongTypesNameTheKey(t *testing.T) {
	checkErrors(t, []errorCase{
		{"uid as a name", "sds:\n  allowed_uids: [101, envoy]\n", []string{"sds.allowed_uids[1]", "envoy", "line 2"}},
		{"bool", "files:\n  - dir: /a\n    allow_world_writable_dir: maybe\n", []string{"files[0].allow_world_writable_dir", "maybe"}},
		{"long value", "admin:\n  min_validity_percent: tenpercentplease\n", []string{"admin.min_validity_percent", "tenperc"}},
		{"files not a list", "files: yes\n", []string{"files:", "yes", "line 1"}},
	})
}
