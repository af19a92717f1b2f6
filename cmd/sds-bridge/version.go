package main

import "github.com/sds-bridge/sds-bridge/admin"

// version is empty unless set at build time with
// -ldflags "-X main.version=v1.2.3" (make build and make image do).
var version string

func versionString() string { return admin.ReadBuildInfo(version).String() }
