package admin

import (
	"cmp"
	"runtime/debug"
	"slices"
	"strings"
)

// revision, commitTime and modified are the commit, its time (RFC 3339)
// and "true" for a dirty tree when the build says so with -X (make release
// does: Go records no VCS stamp in a git worktree, and a release must not
// depend on how it was checked out); otherwise the VCS stamp `go build`
// records is used.
var revision, commitTime, modified string

// BuildInfo says which build of sds-bridge is running, for `sds-bridge
// version`, /status, the logs and the build_info metric. It is kept field
// by field, so that the metric can carry each part as its own label
// (Prometheus' build_info convention) and the text forms are made from
// the same values.
type BuildInfo struct {
	// Version is the -X version if set, else the module version; "(devel)"
	// for a checkout build, never a bare word that reads like a subcommand.
	Version string
	// Revision is the VCS revision, 12 hex digits, "-dirty" when modified;
	// empty when the build recorded none.
	Revision string
	// Time is the VCS commit time as recorded; empty when none.
	Time string
	// GoVersion is the Go toolchain that built the binary.
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

// buildInfoFrom is ReadBuildInfo on given build info, for tests.
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

// String is the one-line description `sds-bridge version` prints:
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
