package envoyboot

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// spireNames are the names a bridge configured for SPIRE's socket path serves.
func spireNames() ServedNames {
	n := DefaultNames()
	n.Socket = "/run/spire/sockets/agent.sock"
	return n
}

func readSPIRE(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "spire", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// Bootstraps written for SPIRE Agent's SDS pass unchanged against a bridge
// whose sds.socket is the path they dial: the cluster's name (spire_agent)
// does not matter, lower-case enums and a single grpc_services object are
// read as Envoy reads them, and deprecated fields are warnings.
func TestValidateAcceptsBootstrapsWrittenForSPIRE(t *testing.T) {
	for _, tc := range []struct {
		file  string
		asked []string
		warn  []string
	}{
		{"backend.yaml", []string{"spiffe://example.org", "spiffe://example.org/backend"},
			[]string{"YAML line 82: static_resources.clusters[spire_agent].http2_protocol_options: field is deprecated", "YAML line 105: admin.access_log_path: field is deprecated"}},
		{"frontend.yaml", []string{"ALL", "ROOTCA", "default"}, nil},
	} {
		t.Run(tc.file, func(t *testing.T) {
			r, err := Lint(readSPIRE(t, tc.file), spireNames())
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(r.Asked, tc.asked) {
				t.Errorf("asked %q, want %q", r.Asked, tc.asked)
			}
			if len(r.Warnings) != len(tc.warn) {
				t.Errorf("warnings %q, want %d", r.Warnings, len(tc.warn))
			}
			for _, w := range tc.warn {
				if !slices.ContainsFunc(r.Warnings, func(s string) bool { return strings.HasPrefix(s, w) }) {
					t.Errorf("no warning %q in %q", w, r.Warnings)
				}
			}
		})
	}
}

// The bridge is the cluster that dials its socket: against the default
// socket, the same SPIRE bootstrap is refused, saying which path the
// cluster dials and which one the bridge listens on.
func TestValidateFindsTheBridgeBySocketNotByName(t *testing.T) {
	err := Validate(readSPIRE(t, "backend.yaml"), DefaultNames())
	want := `secret "spiffe://example.org/backend" is not fetched from the bridge: cluster "spire_agent" dials /run/spire/sockets/agent.sock, but the bridge listens on /run/sds-bridge/sds.sock (sds.socket)`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v\nwant %q", err, want)
	}
	// And a cluster called sds-bridge that dials elsewhere is not the bridge.
	y := strings.ReplaceAll(string(readSPIRE(t, "frontend.yaml")), "spire_agent", BridgeCluster)
	if err := Validate([]byte(y), spireNames()); err != nil {
		t.Fatalf("renamed cluster, same socket: %v", err)
	}
	y = strings.ReplaceAll(y, "/run/spire/sockets/agent.sock", "/tmp/other.sock")
	if err := Validate([]byte(y), spireNames()); err == nil || !strings.Contains(err.Error(), `cluster "sds-bridge" dials /tmp/other.sock`) {
		t.Fatalf("sds-bridge dialling another socket: %v", err)
	}
}

// Enum values are read case-insensitively and a single value where a list
// is expected is a one-element list, as Envoy's loader reads them; a value
// that is no enum value in any case is still refused.
func TestValidateReadsEnumsAndSingleValuesAsEnvoyDoes(t *testing.T) {
	in := generated(t, ModeInbound, TransportSotW)
	out := generated(t, ModeOutbound, TransportDelta)
	for _, tc := range []struct{ name, yaml string }{
		{"lower-case api_type", strings.ReplaceAll(in, "api_type: GRPC", "api_type: grpc")},
		{"mixed-case transport_api_version", strings.ReplaceAll(in, "transport_api_version: V3", "transport_api_version: v3")},
		{"lower-case cluster type", edit(t, out, "type: STRICT_DNS", "type: strict_dns")},
		{"lower-case codec_type", edit(t, in, "stat_prefix: inbound\n", "codec_type: auto\n                stat_prefix: inbound\n")},
		{"single grpc_services object", edit(t, in,
			"grpc_services:\n                          - envoy_grpc:\n                              cluster_name: sds-bridge",
			"grpc_services:\n                            envoy_grpc:\n                              cluster_name: sds-bridge")},
		{"single string for domains", edit(t, in, "domains:\n                        - '*'", "domains: '*'")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := Validate([]byte(tc.yaml), DefaultNames()); err != nil {
				t.Fatal(err)
			}
		})
	}
	if err := Validate([]byte(edit(t, in, "type: STATIC", "type: static_dns")), DefaultNames()); err == nil || !strings.Contains(err.Error(), "static_dns") {
		t.Errorf("an unknown enum value is accepted: %v", err)
	}
}

// A deprecated field is a warning with its YAML line, as Envoy warns, not
// an error; a deprecation Envoy has made fatal stays an error.
func TestValidateWarnsAboutDeprecatedFields(t *testing.T) {
	in := generated(t, ModeInbound, TransportSotW)
	y := edit(t, in, "      connect_timeout: 1s\n", "      connect_timeout: 1s\n      http2_protocol_options: {}\n")
	line := lineOf(t, y, "http2_protocol_options: {}")
	r, err := Lint([]byte(y), DefaultNames())
	if err != nil {
		t.Fatalf("a deprecated field is an error: %v", err)
	}
	want := "YAML line " + line + ": static_resources.clusters[sds-bridge].http2_protocol_options: field is deprecated"
	if len(r.Warnings) != 1 || !strings.HasPrefix(r.Warnings[0], want) {
		t.Errorf("warnings = %q, want one starting %q", r.Warnings, want)
	}
	// A rate limit action on dynamic_metadata is deprecated and disallowed
	// by default: Envoy refuses it.
	vh := regexp.MustCompile(`(?m)^( *)- name: local_app\n`)
	m := vh.FindStringSubmatch(in)
	if m == nil {
		t.Fatal("test bug: no virtual host local_app")
	}
	y = strings.Replace(in, m[0], m[0]+m[1]+"  rate_limits: [{actions: [{dynamic_metadata: {descriptor_key: k, metadata_key: {key: a, path: [{key: b}]}}}]}]\n", 1)
	if err := Validate([]byte(y), DefaultNames()); err == nil || !strings.Contains(err.Error(), "disallowed by default") {
		t.Errorf("a fatal deprecation: %v", err)
	}
}

// lineOf is the 1-based line of the first line containing s, as text.
func lineOf(t *testing.T, y, s string) string {
	t.Helper()
	for i, l := range strings.Split(y, "\n") {
		if strings.Contains(l, s) {
			return strconv.Itoa(i + 1)
		}
	}
	t.Fatalf("test bug: %q is not in the YAML", s)
	return ""
}

// Every error the checker finds after parsing names the YAML line of the
// field at fault, protoc-gen-validate's rules included.
func TestEveryErrorCarriesItsYAMLLine(t *testing.T) {
	in := generated(t, ModeInbound, TransportSotW)
	for _, tc := range []struct{ name, old, new, at string }{
		{"route to a missing cluster", "cluster: local_app\n", "cluster: nowhere\n", "cluster: nowhere"},
		{"unserved name", "- name: default\n", "- name: defualt\n", "name: defualt"},
		{"rule on the bootstrap", "port_value: 8443", "port_value: 70000", "port_value: 70000"},
		{"rule inside a typed_config", "stat_prefix: inbound", "stat_prefix: ''", "stat_prefix: ''"},
		{"resource_api_version", "resource_api_version: V3\n", "resource_api_version: AUTO\n", "resource_api_version: AUTO"},
		{"bridge cluster type", "type: STATIC\n", "type: STRICT_DNS\n", "type: STRICT_DNS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			y := edit(t, in, tc.old, tc.new)
			err := Validate([]byte(y), DefaultNames())
			if err == nil {
				t.Fatal("accepted")
			}
			msgs := strings.Split(strings.TrimPrefix(err.Error(), "invalid bootstrap:\n"), "\n")
			want := "YAML line " + lineOf(t, y, tc.at) + ": "
			found := false
			for _, m := range msgs {
				if !strings.HasPrefix(m, "YAML line ") {
					t.Errorf("no YAML line: %s", m)
				}
				found = found || strings.HasPrefix(m, want)
			}
			if !found {
				t.Errorf("no error at %q:\n%v", want, err)
			}
		})
	}
}

// Bootstraps in the shapes SPIRE's tutorials and real sidecars use —
// ext_authz over gRPC to a local JWT auth helper or Open Policy Agent, JWT
// authn, RBAC and Lua — are parsed and validated to the last field of each
// extension, and pass with no warning; a private extension (a type no
// package of Envoy's API has) passes with one warning that names its line,
// and the rest of that file is still checked.
func TestValidateKnowsEveryExtensionAndWarnsOnPrivateOnes(t *testing.T) {
	for _, tc := range []struct {
		file string
		warn string
	}{
		{"jwt.yaml", ""},
		{"opa.yaml", ""},
		{"jwt-opa.yaml", ""},
		{"rbac-lua.yaml", ""},
		{"private-extension.yaml", "YAML line 49: static_resources.listeners[local_service].filter_chains[0].filters[envoy.filters.network.http_connection_manager]" +
			".typed_config(envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager).http_filters[acme.audit].typed_config: " +
			"@type type.googleapis.com/acme.envoy.filters.http.audit.v1.Audit is in none of the"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			data := readSPIRE(t, tc.file)
			r, err := Lint(data, spireNames())
			if err != nil {
				t.Fatal(err)
			}
			want := []string{"spiffe://example.org", "spiffe://example.org/ns/default/sa/default/backend"}
			if !slices.Equal(r.Asked, want) {
				t.Errorf("asked %q, want %q", r.Asked, want)
			}
			switch {
			case tc.warn == "" && len(r.Warnings) > 0:
				t.Errorf("warnings %q, want none", r.Warnings)
			case tc.warn != "" && (len(r.Warnings) != 1 || !strings.HasPrefix(r.Warnings[0], tc.warn)):
				t.Errorf("warnings %q, want one starting %q", r.Warnings, tc.warn)
			}
			// The rest of the file is checked: a route to a cluster that
			// is not there is still an error.
			broken := strings.Replace(string(data), "cluster: local_service\n", "cluster: local-service\n", 1)
			if err := Validate([]byte(broken), spireNames()); err == nil || !strings.Contains(err.Error(), `cluster "local-service" is not defined`) {
				t.Errorf("a route to a missing cluster: %v", err)
			}
		})
	}
}

// Inside an extension --check knows, a misspelt field, a value its
// protoc-gen-validate rules refuse and a misspelt @type are errors naming
// their YAML line, as in the bootstrap itself.
func TestValidateRefusesMistakesInsideExtensions(t *testing.T) {
	jwt := string(readSPIRE(t, "jwt.yaml"))
	rbac := string(readSPIRE(t, "rbac-lua.yaml"))
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"misspelt ext_authz field", edit(t, jwt, "transport_api_version: V3\n              grpc_service:", "transport_api_versoin: V3\n              grpc_service:"),
			[]string{`unknown field "transport_api_versoin"`, "(YAML line 43)"}},
		{"misspelt RBAC action", edit(t, rbac, "action: ALLOW", "action: ALOW"),
			[]string{"ALOW", "(YAML line 70)"}},
		{"JWKS URI empty", edit(t, rbac, `uri: "https://oidc-discovery.example.org/keys"`, `uri: ""`),
			[]string{"YAML line 55: ", "remote_jwks.http_uri.uri: invalid HttpUri.Uri: value length must be at least 1 runes"}},
		{"misspelt extension type", edit(t, jwt, "ext_authz.v3.ExtAuthz", "ext_authz.v3.ExtAuth"),
			[]string{"YAML line 41:", "did you mean type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz?"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Validate([]byte(tc.yaml), spireNames())
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
		})
	}
}
