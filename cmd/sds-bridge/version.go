package main

import (
	"cmp"
	"runtime/debug"
	"strings"
)

// version is empty unless set at build time with
// -ldflags "-X main.version=v1.2.3" (make build and make image do).
var version string

// versionString says which build this is: the -X version if set, else the
// module version `go install …@vX` records, plus the VCS revision and time
// `go build` stamps in a checkout. It is never a bare word that reads like
// a subcommand.
func versionString() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return cmp.Or(version, "(unknown build)")
	}
	return describeBuild(version, info)
}

// describeBuild is versionString on given build info, for tests.
func describeBuild(ldVersion string, info *debug.BuildInfo) string {
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
