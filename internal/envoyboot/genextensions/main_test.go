package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// The committed extensions.go is what the generator writes for the module
// versions go.mod requires: after a go-control-plane upgrade this fails
// until `go generate ./internal/envoyboot` has run, so --check never
// silently misses the extensions a new version adds.
func TestExtensionsFileIsUpToDate(t *testing.T) {
	want, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("../extensions.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("internal/envoyboot/extensions.go is stale: run go generate ./internal/envoyboot")
	}
	// Guard against a walk that finds little: the packages the issue's
	// bootstraps need are all there.
	for _, pkg := range []string{"envoy/extensions/filters/http/ext_authz/v3", "envoy/extensions/filters/http/jwt_authn/v3",
		"envoy/extensions/filters/http/rbac/v3", "envoy/extensions/filters/http/lua/v3", "envoy/extensions/filters/http/wasm/v3",
		"envoy/extensions/access_loggers/open_telemetry/v3", "envoy/config/trace/v3", "contrib/envoy/extensions/filters/network/kafka_broker/v3"} {
		if !strings.Contains(string(want), "github.com/envoyproxy/go-control-plane/"+pkg+"\"") {
			t.Errorf("the generated imports lack %s", pkg)
		}
	}
}
