package admin

import (
	"cmp"
	"runtime/debug"
	"slices"
	"strings"
)

// revision, commitTime and modified ("true": dirty) are set with -X by
// make release (Go records no VCS stamp in a git worktree); otherwise the
// VCS stamp `go build` records is used.
var revision, commitTime, modified string

// BuildInfo says which build of sds-bridge is running, field by field so
// that the build_info metric carries each part as its own label.
type BuildInfo struct {
	// Version is the -X version, else the module version, else "(devel)".
	Version string
	// Revision is 12 hex digits, "-dirty" when modified; "" when none.
	Revision  string
	Time      string // the VCS commit time; "" when none
	GoVersion string
}

// ReadBuildInfo is the running binary's BuildInfo; ldVersion is the -X
// version (may be empty).
func ReadBuildInfo(ldVersion string) BuildInfo {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return BuildInfo{Version: cmp.Or(ldVersion, "(unknown build)")}
	}
	if revision != "" {
		info.Settings = append(slices.Clone(info.Settings),
			debug.BuildSetting{Key: "vcs.revision", Value: revision},
			debug.BuildSetting{Key: "vcs.time", Value: commitTime},
			debug.BuildSetting{Key: "vcs.modified", Value: modified})
	}
	return buildInfoFrom(ldVersion, info)
}

func buildInfoFrom(ldVersion string, info *debug.BuildInfo) BuildInfo {
	v := cmp.Or(ldVersion, info.Main.Version)
	if v == "" || v == "(devel)" {
		v = "(devel)"
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	rev := settings["vcs.revision"]
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" && settings["vcs.modified"] == "true" {
		rev += "-dirty"
	}
	return BuildInfo{Version: v, Revision: rev, Time: settings["vcs.time"], GoVersion: info.GoVersion}
}

// String is what `sds-bridge version` prints:
// "v1.2.3 (revision 0123456789ab, 2026-11-29T09:00:00Z, go1.26.8)".
func (i BuildInfo) String() string {
	var extra []string
	if i.Revision != "" {
		extra = append(extra, "revision "+i.Revision)
	}
	if i.Time != "" {
		extra = append(extra, i.Time)
	}
	if i.GoVersion != "" {
		extra = append(extra, i.GoVersion)
	}
	if len(extra) == 0 {
		return i.Version
	}
	return i.Version + " (" + strings.Join(extra, ", ") + ")"
}
