// Package buildinfo says which build of sds-bridge is running, for
// `sds-bridge version`, /status and the logs.
package buildinfo

import (
	"cmp"
	"runtime/debug"
	"slices"
	"strings"
)

// revision and commitTime are the commit and its time (RFC 3339) when the
// build says so with -X (make release does: Go records no VCS stamp in a
// git worktree, and a release must not depend on how it was checked out);
// otherwise the VCS stamp `go build` records is used.
var revision, commitTime, modified string

// Describe is the -X version if set (ldVersion), else the module version
// `go install …@vX` records, plus the VCS revision and time `go build`
// stamps in a checkout. It is never a bare word that reads like a
// subcommand.
func Describe(ldVersion string) string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return cmp.Or(ldVersion, "(unknown build)")
	}
	if revision != "" {
		info.Settings = append(slices.Clone(info.Settings),
			debug.BuildSetting{Key: "vcs.revision", Value: revision},
			debug.BuildSetting{Key: "vcs.time", Value: commitTime},
			debug.BuildSetting{Key: "vcs.modified", Value: modified})
	}
	return describe(ldVersion, info)
}

// describe is Describe on given build info, for tests.
func describe(ldVersion string, info *debug.BuildInfo) string {
	v := cmp.Or(ldVersion, info.Main.Version)
	if v == "" || v == "(devel)" {
		v = "(devel)"
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}

	var extra []string
	if rev := settings["vcs.revision"]; rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if settings["vcs.modified"] == "true" {
			rev += "-dirty"
		}
		extra = append(extra, "revision "+rev)
	}
	if t := settings["vcs.time"]; t != "" {
		extra = append(extra, t)
	}
	extra = append(extra, info.GoVersion)
	return v + " (" + strings.Join(extra, ", ") + ")"
}
