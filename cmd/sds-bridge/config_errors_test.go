package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A bad config stops `run` before anything starts, with an error naming
// the key and the value (main turns it into exit status 1).
func TestRunRefusesBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"misspelled key", "sds:\n  allowed_uid: [101]\n", []string{`unknown key "allowed_uid"`, "line 2"}},
		{"world-writable key mode", "files:\n  - dir: /tmp/x\n    key_mode: \"0777\"\n", []string{"files[0].key_mode", `"0777"`}},
		{"negative uid", "sds:\n  allowed_uids: [-1]\n", []string{"sds.allowed_uids[0]", "-1"}},
		{"owner beyond 32 bits", "files:\n  - dir: /tmp/x\n    owner: \"4294967296:0\"\n", []string{"files[0].owner", `"4294967296:0"`}},
		{"world-accessible socket", "sds:\n  socket_mode: \"0666\"\n", []string{"sds.socket_mode", `"0666"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bridge.yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			err := run(t.Context(), []string{"run", "--config", path, "--workload-api", "unix:///nonexistent.sock"}, io.Discard, io.Discard)
			if err == nil {
				t.Fatal("run accepted the config")
			}
			for _, w := range append(tc.want, path) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// An unknown flag names the nearest flag of its command, when one is
// close enough to be the one meant; a flag close to none gets no guess.
func TestAnUnknownFlagSuggestsTheNearest(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--sds-sockt", "/x"}, "-sds-sockt; did you mean --sds-socket?"},
		{[]string{"dev", "--svid-tll", "1m"}, "-svid-tll; did you mean --svid-ttl?"},
		{[]string{"wait", "--dri", "/x"}, "-dri; did you mean --dir?"},
		{[]string{"import-spiffe-helper", "--base-dri", "/x", "h.conf"}, "-base-dri; did you mean --base-dir?"},
		{[]string{"run", "--colour", "blue"}, "flag provided but not defined: -colour"},
	} {
		err := run(t.Context(), tc.args, &syncBuffer{}, &syncBuffer{})
		if err == nil || !strings.HasSuffix(err.Error(), tc.want) {
			t.Errorf("%q: %v, want it to end %q", tc.args, err, tc.want)
		}
	}
}
