package envoyboot

import (
	"slices"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
)

func generated(t *testing.T, m Mode, tr Transport) string {
	t.Helper()
	y, err := Generate(exampleOptions(m, tr))
	if err != nil {
		t.Fatal(err)
	}
	return string(y)
}

// edit replaces old (which must occur) by new in the YAML.
func edit(t *testing.T, y, old, new string) string {
	t.Helper()
	if !strings.Contains(y, old) {
		t.Fatalf("test bug: %q is not in the YAML", old)
	}
	return strings.Replace(y, old, new, 1)
}

// dropLine removes the first line that is text once trimmed.
func dropLine(t *testing.T, y, text string) string {
	t.Helper()
	lines := strings.SplitAfter(y, "\n")
	for i, l := range lines {
		if strings.TrimSpace(l) == text {
			return strings.Join(append(lines[:i:i], lines[i+1:]...), "")
		}
	}
	t.Fatalf("test bug: no line %q", text)
	return ""
}

// Each mistake, made in YAML text, is refused with a message naming it.
func TestValidateRefusesYAMLMistakes(t *testing.T) {
	in := generated(t, ModeInbound, TransportSotW)
	out := generated(t, ModeOutbound, TransportSotW)
	for _, tc := range []struct {
		name string
		yaml string
		want []string
	}{
		{"unknown top-level field", edit(t, in, "node:\n", "nodes: {}\nnode:\n"), []string{`unknown field "nodes"`, "YAML line 4"}},
		{"unknown field in typed_config", edit(t, in, "stat_prefix: inbound", "stat_prefx: inbound"), []string{`unknown field "stat_prefx"`}},
		{"misspelt enum", edit(t, in, "api_type: GRPC", "api_type: GRCP"), []string{"api_type", "GRCP", "YAML line 53"}},
		{"unresolvable typed_config", edit(t, in, "envoy.extensions.filters.http.router.v3.Router", "envoy.extensions.filters.http.routr.v3.Router"), []string{"routr", "did you mean type.googleapis.com/envoy.extensions.filters.http.router.v3.Router?", "YAML line 33:"}},
		{"wrong type for a field", edit(t, in, "port_value: 8443", "port_value: [8443]"), []string{"port_value"}},
		{"duplicate key", edit(t, in, "  id: sidecar-inbound\n", "  id: sidecar-inbound\n  id: again\n"), []string{"already defined"}},
		{"two documents", in + "---\nnode: {}\n", []string{"more than one YAML document"}},
		{"empty", "# nothing\n", []string{"empty document"}},
		{"not a mapping", "- a\n", []string{"not a mapping"}},
		{"ValidateAll on the bootstrap", edit(t, in, "port_value: 8443", "port_value: 70000"), []string{"PortValue", "65535"}},
		{"ValidateAll inside a typed_config", edit(t, in, "stat_prefix: inbound", "stat_prefix: ''"), []string{"HttpConnectionManager", "StatPrefix"}},
		{"route to a missing cluster", edit(t, in, "cluster: local_app\n", "cluster: local-app\n"), []string{`cluster "local-app" is not defined`, "route_config"}},
		{"envoy_grpc to a missing cluster", strings.ReplaceAll(in, "cluster_name: sds-bridge\n", "cluster_name: sds_bridge\n"), []string{`cluster "sds_bridge" is not defined`, "envoy_grpc"}},
		{"unserved certificate name", edit(t, in, "- name: default\n", "- name: defualt\n"), []string{`secret "defualt" (tls_certificate) is not served`}},
		{"certificate name in the wrong case", edit(t, in, "- name: default\n", "- name: Default\n"), []string{`did you mean "default"`}},
		{"bundle asked for as a certificate", edit(t, in, "- name: default\n", "- name: ROOTCA\n"), []string{`"ROOTCA" is served, but as the other kind`}},
		{"trust domain asked for as a certificate", edit(t, in, "- name: default\n", "- name: spiffe://example.org\n"), []string{`secret "spiffe://example.org" (tls_certificate) is not served`}},
		{"SPIFFE ID asked for as a bundle", edit(t, in, "name: ALL\n", "name: spiffe://example.org/backend\n"), []string{`secret "spiffe://example.org/backend" (validation_context) is not served`}},
		{"unserved bundle name", edit(t, out, "name: ALL\n", "name: all-bundles\n"), []string{`secret "all-bundles" (validation_context) is not served`}},
		{"resource_api_version missing", dropLine(t, in, "resource_api_version: V3"), []string{"resource_api_version is AUTO"}},
		{"unknown field in TypedStruct", edit(t, in,
			"typed_config:\n                      '@type': type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
			"typed_config:\n                      '@type': type.googleapis.com/xds.type.v3.TypedStruct\n                      type_url: type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n                      value: {dynamic_stat: true}"),
			[]string{"TypedStruct value", `unknown field "dynamic_stat"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Validate([]byte(tc.yaml), DefaultNames())
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.yaml)
			}
			if strings.Contains(err.Error(), "proto:") || strings.Contains(err.Error(), "(line 1:") {
				t.Errorf("error still carries protojson's JSON position: %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
		})
	}
}

// Mistakes easier to make on the proto: each is refused with a message
// naming it.
func TestValidateRefusesStructuralMistakes(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode Mode
		tr   Transport
		edit func(b *bootstrapv3.Bootstrap)
		want string
	}{
		{"bridge cluster after its user", ModeOutbound, TransportSotW, func(b *bootstrapv3.Bootstrap) {
			cs := b.StaticResources.Clusters
			cs[0], cs[1] = cs[1], cs[0]
		}, `cluster "sds-bridge" must be defined before the cluster that uses it`},
		{"bridge cluster without HTTP/2", ModeInbound, TransportSotW, func(b *bootstrapv3.Bootstrap) {
			bridge(b).TypedExtensionProtocolOptions = nil
		}, "the bridge speaks gRPC"},
		{"bridge cluster on TCP", ModeInbound, TransportSotW, func(b *bootstrapv3.Bootstrap) {
			bridge(b).LoadAssignment.Endpoints[0].LbEndpoints[0].GetEndpoint().Address = socketAddress("127.0.0.1", 8444)
		}, "is not a pipe"},
		{"bridge cluster missing", ModeInbound, TransportSotW, func(b *bootstrapv3.Bootstrap) {
			b.StaticResources.Clusters = b.StaticResources.Clusters[1:]
		}, `no static cluster dials the bridge's socket /run/sds-bridge/sds.sock`},
		{"duplicate cluster", ModeInbound, TransportSotW, func(b *bootstrapv3.Bootstrap) {
			b.StaticResources.Clusters = append(b.StaticResources.Clusters, proto.Clone(b.StaticResources.Clusters[1]).(*clusterv3.Cluster))
		}, `cluster "local_app" is already static_resources.clusters[1]`},
		{"duplicate listener", ModeInbound, TransportSotW, func(b *bootstrapv3.Bootstrap) {
			b.StaticResources.Listeners = append(b.StaticResources.Listeners, proto.Clone(b.StaticResources.Listeners[0]).(*listenerv3.Listener))
		}, `listener "inbound" is already`},
		{"ADS secrets without ads_config", ModeInbound, TransportADS, func(b *bootstrapv3.Bootstrap) {
			b.DynamicResources = nil
		}, "dynamic_resources.ads_config is missing"},
		{"ADS pointing elsewhere", ModeInbound, TransportADS, func(b *bootstrapv3.Bootstrap) {
			b.DynamicResources.AdsConfig.GrpcServices[0].GetEnvoyGrpc().ClusterName = "local_app"
		}, `secret "default" is not fetched from the bridge`},
		{"secret from another cluster", ModeInbound, TransportSotW, func(b *bootstrapv3.Bootstrap) {
			tls := downstreamTLS(t, b)
			tls.CommonTlsContext.TlsCertificateSdsSecretConfigs[0].SdsConfig.GetApiConfigSource().GrpcServices[0].GetEnvoyGrpc().ClusterName = "local_app"
			setDownstreamTLS(b, tls)
		}, `secret "default" is not fetched from the bridge`},
		{"static secret that does not exist", ModeInbound, TransportSotW, func(b *bootstrapv3.Bootstrap) {
			tls := downstreamTLS(t, b)
			tls.CommonTlsContext.TlsCertificateSdsSecretConfigs[0].SdsConfig = nil
			setDownstreamTLS(b, tls)
		}, "no sds_config and is not in static_resources.secrets"},
		{"session ticket keys from the bridge", ModeInbound, TransportSotW, func(b *bootstrapv3.Bootstrap) {
			tls := downstreamTLS(t, b)
			tls.SessionTicketKeysType = &tlsv3.DownstreamTlsContext_SessionTicketKeysSdsSecretConfig{
				SessionTicketKeysSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: "default", SdsConfig: tls.CommonTlsContext.TlsCertificateSdsSecretConfigs[0].SdsConfig},
			}
			setDownstreamTLS(b, tls)
		}, "serves only tls_certificate and validation_context"},
		{"clusters asked of the bridge over ADS", ModeInbound, TransportADS, func(b *bootstrapv3.Bootstrap) {
			b.DynamicResources.CdsConfig = &corev3.ConfigSource{
				ResourceApiVersion:    corev3.ApiVersion_V3,
				ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
			}
		}, "asks the bridge for resources other than secrets"},
		{"REST to the bridge", ModeInbound, TransportSotW, func(b *bootstrapv3.Bootstrap) {
			tls := downstreamTLS(t, b)
			tls.CommonTlsContext.TlsCertificateSdsSecretConfigs[0].SdsConfig.GetApiConfigSource().ApiType = corev3.ApiConfigSource_REST
			setDownstreamTLS(b, tls)
		}, "api_type REST: the bridge speaks GRPC and DELTA_GRPC"},
		{"router not last", ModeInbound, TransportSotW, func(b *bootstrapv3.Bootstrap) {
			fc := b.StaticResources.Listeners[0].FilterChains[0]
			var hcm hcmv3.HttpConnectionManager
			if err := fc.Filters[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
				t.Fatal(err)
			}
			hcm.HttpFilters = append(hcm.HttpFilters, &hcmv3.HttpFilter{Name: "envoy.filters.http.health_check"})
			fc.Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(&hcm)}
		}, "the last HTTP filter is \"envoy.filters.http.health_check\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := exampleOptions(tc.mode, tc.tr)
			b, err := Build(o)
			if err != nil {
				t.Fatal(err)
			}
			tc.edit(b)
			y, err := marshalYAML(b)
			if err != nil {
				t.Fatal(err)
			}
			err = Validate(y, DefaultNames())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

func bridge(b *bootstrapv3.Bootstrap) *clusterv3.Cluster {
	for _, c := range b.StaticResources.Clusters {
		if c.Name == BridgeCluster {
			return c
		}
	}
	return nil
}

func downstreamTLS(t *testing.T, b *bootstrapv3.Bootstrap) *tlsv3.DownstreamTlsContext {
	t.Helper()
	var tls tlsv3.DownstreamTlsContext
	if err := b.StaticResources.Listeners[0].FilterChains[0].TransportSocket.GetTypedConfig().UnmarshalTo(&tls); err != nil {
		t.Fatal(err)
	}
	return &tls
}

func setDownstreamTLS(b *bootstrapv3.Bootstrap, tls *tlsv3.DownstreamTlsContext) {
	b.StaticResources.Listeners[0].FilterChains[0].TransportSocket.ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(tls)}
}

// What the bridge serves is accepted, including SPIRE-style names.
func TestValidateAcceptsEveryServedName(t *testing.T) {
	in := generated(t, ModeInbound, TransportSotW)
	for _, tc := range []struct{ cert, bundle string }{
		{"default", "ALL"},
		{"default", "ROOTCA"},
		{"spiffe://example.org/ns/demo/sa/backend", "spiffe://example.org"},
		{"default", "spiffe://federated.example"},
	} {
		y := edit(t, in, "- name: default\n", "- name: "+tc.cert+"\n")
		y = edit(t, y, "name: ALL\n", "name: "+tc.bundle+"\n")
		if err := Validate([]byte(y), DefaultNames()); err != nil {
			t.Errorf("cert %q, bundle %q: %v", tc.cert, tc.bundle, err)
		}
	}
}

// With SPIFFE validation disabled the bridge does not serve ALL (as SPIRE),
// so a bootstrap that asks for it is refused and ROOTCA still passes.
func TestValidateKnowsALLIsOffWithoutSPIFFEValidation(t *testing.T) {
	names := DefaultNames()
	names.AllBundlesOff = true
	in := generated(t, ModeInbound, TransportSotW)
	err := Validate([]byte(in), names)
	if err == nil || !strings.Contains(err.Error(), "disable_spiffe_cert_validation") {
		t.Fatalf("ALL with validation off: %v", err)
	}
	if err := Validate([]byte(edit(t, in, "name: ALL\n", "name: ROOTCA\n")), names); err != nil {
		t.Errorf("ROOTCA with validation off: %v", err)
	}
}

// Every problem is reported, not only the first.
func TestValidateReportsEveryProblem(t *testing.T) {
	y := generated(t, ModeInbound, TransportSotW)
	y = edit(t, y, "- name: default\n", "- name: defualt\n")
	y = edit(t, y, "cluster: local_app\n", "cluster: nowhere\n")
	err := Validate([]byte(y), DefaultNames())
	for _, w := range []string{`"defualt"`, `"nowhere"`} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error does not mention %s: %v", w, err)
		}
	}
}

func BenchmarkValidate(b *testing.B) {
	y, err := Generate(exampleOptions(ModeInbound, TransportSotW))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := Validate(y, DefaultNames()); err != nil {
			b.Fatal(err)
		}
	}
}

func TestSecretNames(t *testing.T) {
	for _, tr := range transports {
		b, err := Build(exampleOptions(ModeOutbound, tr))
		if err != nil {
			t.Fatal(err)
		}
		if got := SecretNames(b); !slices.Equal(got, []string{"ALL", "default"}) {
			t.Errorf("%s: SecretNames = %q", tr, got)
		}
	}
	b, err := Build(exampleOptions(ModeInbound, TransportADS))
	if err != nil {
		t.Fatal(err)
	}
	b.DynamicResources = nil // secrets over ADS with no ADS: nothing is asked of the bridge
	if got := SecretNames(b); len(got) != 0 {
		t.Errorf("SecretNames without ads_config = %q", got)
	}
}
