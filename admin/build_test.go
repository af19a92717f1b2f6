package admin

import (
	"runtime/debug"
	"testing"
)

// TestVersionNamesTheBuild: the printed version is the -X value, else the
// module version, with the VCS revision (marked dirty when modified) and
// time; a plain checkout build says "(devel)", never a bare "dev".
func TestVersionNamesTheBuild(t *testing.T) {
	vcs := []debug.BuildSetting{
		{Key: "vcs.revision", Value: "0123456789abcdef0123"},
		{Key: "vcs.time", Value: "2026-11-29T09:00:00Z"},
		{Key: "vcs.modified", Value: "true"},
	}
	for _, tc := range []struct {
		name, ld, mod string
		settings      []debug.BuildSetting
		want          string
	}{
		{"ldflags win", "v1.2.3", "v0.0.0-x", vcs, "v1.2.3 (revision 0123456789ab-dirty, 2026-11-29T09:00:00Z, go1.26.8)"},
		{"go install @version", "", "v1.4.0", nil, "v1.4.0 (go1.26.8)"},
		{"checkout build", "", "(devel)", vcs[:2], "(devel) (revision 0123456789ab, 2026-11-29T09:00:00Z, go1.26.8)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			info := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: tc.mod}, Settings: tc.settings}
			if got := buildInfoFrom(tc.ld, info).String(); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestBuildInfoKeepsEachPartApart: the version, revision and Go version are
// separate fields (the metric's labels), not one description to parse.
func TestBuildInfoKeepsEachPartApart(t *testing.T) {
	info := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "0123456789abcdef0123"},
		{Key: "vcs.time", Value: "2026-11-29T09:00:00Z"},
	}}
	got := buildInfoFrom("v1.2.3", info)
	want := BuildInfo{Version: "v1.2.3", Revision: "0123456789ab", Time: "2026-11-29T09:00:00Z", GoVersion: "go1.26.8"}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}
