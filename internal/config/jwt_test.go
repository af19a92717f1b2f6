package config

import (
	"os"
	"testing"

	"github.com/sds-bridge/sds-bridge/jwtfiles"
)

func TestJWTKeys(t *testing.T) {
	c, err := parseDefaultValidate(t, `files:
  - dir: /a
    jwt_svids:
      - audience: https://api.example.org
        extra_audiences: [billing]
        file_name: api.token
    jwt_bundle_file_name: jwt_bundle.json
    jwt_mode: "0640"
  - dir: /b
    jwt_bundle_file_name: bundle.json
`)
	if err != nil {
		t.Fatal(err)
	}
	f := c.Files[0]
	want := jwtfiles.SVIDFile{Audience: "https://api.example.org", ExtraAudiences: []string{"billing"}, FileName: "api.token"}
	if len(f.JWT.SVIDs) != 1 || f.JWT.SVIDs[0].Audience != want.Audience || f.JWT.SVIDs[0].FileName != want.FileName ||
		len(f.JWT.SVIDs[0].ExtraAudiences) != 1 || f.JWT.SVIDs[0].ExtraAudiences[0] != "billing" {
		t.Errorf("files[0].jwt_svids = %+v, want [%+v]", f.JWT.SVIDs, want)
	}
	if jf := f.JWTFolder().WithDefaults(); f.JWT.BundleFileName != "jwt_bundle.json" || jf.Mode != 0o640 || jf.BundleMode != os.FileMode(DefaultJWTBundleMode) {
		t.Errorf("files[0] jwt keys = %q %v %v", f.JWT.BundleFileName, jf.Mode, jf.BundleMode)
	}
	if mode := c.Files[1].JWTFolder().WithDefaults().Mode; mode != os.FileMode(DefaultJWTMode) {
		t.Errorf("files[1].jwt_mode = %v, want the default %v", mode, DefaultJWTMode)
	}
}

func TestJWTErrorsNameKeyAndValue(t *testing.T) {
	checkErrors(t, []errorCase{
		{"no audience", "files:\n  - dir: /a\n    jwt_svids: [{file_name: t}]\n", []string{"files[0].jwt_svids[0].audience", "missing"}},
		{"no file name", "files:\n  - dir: /a\n    jwt_svids: [{audience: x}]\n", []string{"files[0].jwt_svids[0].file_name", "missing"}},
		{"path as file name", "files:\n  - dir: /a\n    jwt_svids: [{audience: x, file_name: ../t}]\n", []string{"files[0].jwt_svids[0].file_name", `"../t"`}},
		{"empty extra audience", "files:\n  - dir: /a\n    jwt_svids: [{audience: x, file_name: t, extra_audiences: [\"\"]}]\n", []string{"files[0].jwt_svids[0].extra_audiences[0]"}},
		{"same name as the key", "files:\n  - dir: /a\n    jwt_svids: [{audience: x, file_name: svid_key.pem}]\n", []string{"files[0].jwt_svids[0].file_name", `"svid_key.pem"`, "key_file_name"}},
		{"two tokens one file", "files:\n  - dir: /a\n    jwt_svids: [{audience: x, file_name: t}, {audience: y, file_name: t}]\n", []string{"files[0].jwt_svids[1].file_name", `"t"`}},
		{"bundle over a token", "files:\n  - dir: /a\n    jwt_svids: [{audience: x, file_name: t}]\n    jwt_bundle_file_name: t\n", []string{"files[0].jwt_bundle_file_name", `"t"`}},
		{"world-readable token", "files:\n  - dir: /a\n    jwt_mode: \"0644\"\n", []string{"files[0].jwt_mode", `"0644"`}},
		{"world-writable bundle", "files:\n  - dir: /a\n    jwt_bundle_mode: \"0666\"\n", []string{"files[0].jwt_bundle_mode", `"0666"`}},
		{"decimal mode", "files:\n  - dir: /a\n    jwt_mode: 600\n", []string{"quoted octal"}},
	})
}

// An action runs on X.509 swaps unless it says otherwise: a JWT refresh
// every few minutes must not reload a server that reads no JWT.
func TestOnRotateOnDefaultsToX509(t *testing.T) {
	c, err := parseDefaultValidate(t, `files:
  - dir: /a
    jwt_svids: [{audience: x, file_name: t}]
    on_rotate:
      - signal: {pid_file: /run/pg.pid}
      - exec: {command: [/bin/true]}
        on: [x509, jwt]
      - exec: {command: [/bin/false]}
        on: [jwt]
`)
	if err != nil {
		t.Fatal(err)
	}
	type runs struct{ x509, jwt bool }
	want := []runs{{true, false}, {true, true}, {false, true}}
	for i, a := range c.Files[0].OnRotate {
		if got := (runs{a.RunsOn(EventX509), a.RunsOn(EventJWT)}); got != want[i] {
			t.Errorf("on_rotate[%d] (on %v) runs on x509, jwt = %v, want %v", i, a.On, got, want[i])
		}
	}
	if on := c.Files[0].OnRotate[0].On; len(on) != 1 || on[0] != EventX509 {
		t.Errorf("on_rotate[0].on after Default = %v, want [x509]", on)
	}
}

func TestOnRotateOnErrorsNameKeyAndValue(t *testing.T) {
	const folder = "files:\n  - dir: /a\n    jwt_svids: [{audience: x, file_name: t}]\n    on_rotate:\n      - signal: {pid_file: /p}\n"
	checkErrors(t, []errorCase{
		{"unknown event", folder + "        on: [x509, rotate]\n", []string{"files[0].on_rotate[0].on[1]", `"rotate"`, "x509 or jwt"}},
		{"upper case", folder + "        on: [JWT]\n", []string{"files[0].on_rotate[0].on[0]", `"JWT"`}},
		{"twice", folder + "        on: [jwt, jwt]\n", []string{"files[0].on_rotate[0].on[1]", `"jwt"`, "twice"}},
		{"jwt without JWT files", "files:\n  - dir: /a\n    on_rotate:\n      - signal: {pid_file: /p}\n        on: [jwt]\n", []string{"files[0].on_rotate[0].on", "never run"}},
		{"a string, not a list", folder + "        on: jwt\n", []string{"on"}},
	})
}
