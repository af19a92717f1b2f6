package envoyboot

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/sds-bridge/sds-bridge/internal/config"
)

// Mode says which side of the workload the sidecar Envoy sits on.
type Mode string

const (
	// ModeInbound: an mTLS listener in front of a local app.
	ModeInbound Mode = "inbound"
	// ModeOutbound: a plain local listener for the app, forwarding to an
	// upstream over mTLS.
	ModeOutbound Mode = "outbound"
)

// Transport is how Envoy subscribes to the bridge; it serves all three.
type Transport string

const (
	// TransportSotW: one SDS stream per secret config, state of the world.
	TransportSotW Transport = "sotw"
	// TransportDelta: incremental SDS (api_type DELTA_GRPC).
	TransportDelta Transport = "delta"
	// TransportADS: secrets over one aggregated stream (sds_config: {ads: {}}).
	TransportADS Transport = "ads"
)

// DefaultInitialFetchTimeout bounds how long Envoy keeps a listener or
// cluster warming while it waits for its first secret.
//
// Why 10s, not Envoy's 15s nor "forever" (0s): the bridge starts before
// Envoy (a native sidecar gated on its readiness), so in a healthy pod the
// secrets arrive within milliseconds of Envoy connecting; a secret still
// missing after 10s means a misnamed secret, a wrong socket path or a dead
// bridge, and waiting longer fixes none of them. After the timeout Envoy
// finishes starting, so its admin page, its logs and the
// sds.<name>.init_fetch_timeout counter show what is missing — instead of
// an Envoy that hangs in initialisation without a word. It still fails
// closed: a listener with no certificate completes no handshake, and the
// secret is applied whenever it does arrive.
const DefaultInitialFetchTimeout = 10 * time.Second

// Port defaults.
const (
	DefaultInboundListenPort  = 8443
	DefaultOutboundListenPort = 9001
	DefaultAppPort            = 8080
)

// DefaultNodeCluster is Envoy's node.cluster unless told otherwise.
const DefaultNodeCluster = "sds-bridge-sidecar"

// Options describe one sidecar. Zero values take the defaults named on
// each field.
type Options struct {
	Mode      Mode      // required
	Transport Transport // default TransportSotW
	// SDSSocket is the bridge's socket (config sds.socket); default
	// config.DefaultSDSSocket.
	SDSSocket string
	// Names are the names the bridge serves; empty ones take the defaults.
	Names ServedNames

	// ListenAddress defaults to 0.0.0.0 inbound (peers connect to it) and
	// 127.0.0.1 outbound (only the local app may use it).
	ListenAddress string
	// ListenPort defaults to 8443 inbound, 9001 outbound.
	ListenPort uint32

	// AppAddress and AppPort locate the local app (inbound); default
	// 127.0.0.1:8080.
	AppAddress string
	AppPort    uint32
	// AllowedSPIFFEIDs are the peers the inbound listener accepts (at least
	// one). A SPIFFE ID matches exactly; a bare trust domain
	// (spiffe://example.org) matches every workload in it.
	AllowedSPIFFEIDs []string

	// UpstreamAddress (host name or IP) and UpstreamPort locate the
	// upstream (outbound; required).
	UpstreamAddress string
	UpstreamPort    uint32
	// UpstreamSPIFFEID is the identity the upstream must present
	// (outbound; required). A bare trust domain accepts any of its workloads.
	UpstreamSPIFFEID string

	// InitialFetchTimeout: 0 means DefaultInitialFetchTimeout; a negative
	// value means wait for secrets forever (Envoy's 0s).
	InitialFetchTimeout time.Duration
	// AdminPort, when set, gives Envoy an admin listener on 127.0.0.1 and
	// no other address: anything that reaches it can stop Envoy
	// (/quitquitquit) or drain its listeners. Default: no admin listener.
	AdminPort uint32
	// NodeID and NodeCluster identify this Envoy to the bridge (it logs
	// them); default "sidecar-<mode>" and DefaultNodeCluster.
	NodeID, NodeCluster string
}

func (o Options) withDefaults() Options {
	o.Transport = cmp.Or(o.Transport, TransportSotW)
	o.SDSSocket = cmp.Or(o.SDSSocket, config.DefaultSDSSocket)
	o.Names = o.Names.withDefaults()
	switch o.Mode {
	case ModeInbound:
		o.ListenAddress = cmp.Or(o.ListenAddress, "0.0.0.0")
		o.ListenPort = cmp.Or(o.ListenPort, DefaultInboundListenPort)
	case ModeOutbound:
		o.ListenAddress = cmp.Or(o.ListenAddress, "127.0.0.1")
		o.ListenPort = cmp.Or(o.ListenPort, DefaultOutboundListenPort)
	}
	o.AppAddress = cmp.Or(o.AppAddress, "127.0.0.1")
	o.AppPort = cmp.Or(o.AppPort, DefaultAppPort)
	o.InitialFetchTimeout = cmp.Or(o.InitialFetchTimeout, DefaultInitialFetchTimeout)
	o.NodeID = cmp.Or(o.NodeID, "sidecar-"+string(o.Mode))
	o.NodeCluster = cmp.Or(o.NodeCluster, DefaultNodeCluster)
	return o
}

// OptionError is a missing or bad option. Option names the Options field,
// so that a CLI can name its own flag instead.
type OptionError struct {
	Option string // "UpstreamAddress", "AllowedSPIFFEIDs", …
	Msg    string
}

func (e *OptionError) Error() string { return e.Msg }

func (o Options) validate() error {
	if o.Mode != ModeInbound && o.Mode != ModeOutbound {
		// Every other default depends on the mode.
		return &OptionError{"Mode", fmt.Sprintf("mode %q: want inbound or outbound", o.Mode)}
	}
	var errs []error
	bad := func(option, format string, args ...any) {
		errs = append(errs, &OptionError{option, fmt.Sprintf(format, args...)})
	}
	switch o.Transport {
	case TransportSotW, TransportDelta, TransportADS:
	default:
		bad("Transport", "transport %q: want sotw, delta or ads", o.Transport)
	}
	if !filepath.IsAbs(o.SDSSocket) {
		bad("SDSSocket", "SDS socket %q must be an absolute path", o.SDSSocket)
	}
	if net.ParseIP(o.ListenAddress) == nil {
		bad("ListenAddress", "listen address %q is not an IP address", o.ListenAddress)
	}
	for _, p := range []struct {
		option, what string
		port         uint32
	}{{"ListenPort", "listen port", o.ListenPort}, {"AppPort", "app port", o.AppPort}, {"AdminPort", "admin port", o.AdminPort}, {"UpstreamPort", "upstream port", o.UpstreamPort}} {
		if p.port > 65535 {
			bad(p.option, "%s %d is not a TCP port", p.what, p.port)
		}
	}
	switch o.Mode {
	case ModeInbound:
		if net.ParseIP(o.AppAddress) == nil {
			bad("AppAddress", "app address %q is not an IP address", o.AppAddress)
		}
		if len(o.AllowedSPIFFEIDs) == 0 {
			bad("AllowedSPIFFEIDs", "inbound: name at least one allowed peer SPIFFE ID (or a trust domain, spiffe://example.org, to accept all of its workloads)")
		}
		for _, id := range o.AllowedSPIFFEIDs {
			if _, err := spiffeid.FromString(id); err != nil {
				bad("AllowedSPIFFEIDs", "allowed SPIFFE ID %q: %v", id, err)
			}
		}
		// Outbound names one peer, so only inbound can span trust domains.
		if tds := trustDomains(o.AllowedSPIFFEIDs); o.Names.AllBundlesOff && len(tds) > 1 {
			bad("AllowedSPIFFEIDs", "peers in trust domains %s: with sds.disable_spiffe_cert_validation Envoy checks peers against one trust domain's bundle (plain trusted_ca), so name peers of one trust domain, or enable the SPIFFE validator", strings.Join(tds, ", "))
		}
	case ModeOutbound:
		if o.UpstreamAddress == "" || o.UpstreamPort == 0 {
			bad("UpstreamAddress", "outbound: upstream address and port are required")
		}
		if o.UpstreamSPIFFEID == "" {
			bad("UpstreamSPIFFEID", "outbound: the upstream's SPIFFE ID is required; without it any workload of a trusted domain could impersonate the upstream")
		} else if _, err := spiffeid.FromString(o.UpstreamSPIFFEID); err != nil {
			bad("UpstreamSPIFFEID", "upstream SPIFFE ID %q: %v", o.UpstreamSPIFFEID, err)
		}
	}
	return errors.Join(errs...)
}

// trustDomains lists, sorted and once each, the trust domains (as
// spiffe://<td>) of the valid SPIFFE IDs in ids.
func trustDomains(ids []string) []string {
	var tds []string
	for _, s := range ids {
		id, err := spiffeid.FromString(s)
		if err != nil {
			continue
		}
		if td := id.TrustDomain().IDString(); !slices.Contains(tds, td) {
			tds = append(tds, td)
		}
	}
	slices.Sort(tds)
	return tds
}

// Generate returns a complete Envoy bootstrap (YAML) for opts. It is built
// from Envoy's protos and passes Validate with opts.Names.
func Generate(opts Options) ([]byte, error) {
	b, err := Build(opts)
	if err != nil {
		return nil, err
	}
	out, err := marshalYAML(b)
	if err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	return append([]byte(header(opts.withDefaults())), out...), nil
}

func header(o Options) string {
	var s strings.Builder
	fmt.Fprintf(&s, "# Envoy bootstrap generated by sds-bridge envoy-bootstrap (%s, %s).\n", o.Mode, o.Transport)
	fmt.Fprintf(&s, "# Secrets come from sds-bridge on unix socket %s (cluster %q):\n", o.SDSSocket, BridgeCluster)
	if o.Names.AllBundlesOff {
		fmt.Fprintf(&s, "# certificate %q, peers validated through %q (trusted_ca: sds.disable_spiffe_cert_validation)\n", o.Names.SVID, validationName(o, o.peers()))
		fmt.Fprintf(&s, "# and their URI SAN.\n")
	} else {
		fmt.Fprintf(&s, "# certificate %q, peers validated through %q (SPIFFE validator).\n", o.Names.SVID, o.Names.AllBundles)
	}
	return s.String()
}

// Build is Generate before rendering: the Bootstrap proto for opts.
func Build(opts Options) (*bootstrapv3.Bootstrap, error) {
	o := opts.withDefaults()
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("%w", err)
	}
	b := &bootstrapv3.Bootstrap{
		Node: &corev3.Node{Id: o.NodeID, Cluster: o.NodeCluster},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{
			// The bridge's cluster comes first: clusters that use SDS refer to it.
			Clusters: []*clusterv3.Cluster{bridgeCluster(o)},
		},
	}
	if o.AdminPort != 0 {
		b.Admin = &bootstrapv3.Admin{Address: socketAddress("127.0.0.1", o.AdminPort)}
	}
	if o.Transport == TransportADS {
		b.DynamicResources = &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: apiConfigSource(corev3.ApiConfigSource_GRPC),
		}
	}
	sr := b.StaticResources
	switch o.Mode {
	case ModeInbound:
		tls := &tlsv3.DownstreamTlsContext{
			CommonTlsContext:         commonTLS(o, o.AllowedSPIFFEIDs),
			RequireClientCertificate: wrapperspb.Bool(true),
		}
		sr.Listeners = []*listenerv3.Listener{listener(o, "inbound", "local_app", tls, true)}
		sr.Clusters = append(sr.Clusters, plainCluster("local_app", o.AppAddress, o.AppPort, nil))
	case ModeOutbound:
		sni := ""
		if net.ParseIP(o.UpstreamAddress) == nil {
			sni = o.UpstreamAddress
		}
		tls := &tlsv3.UpstreamTlsContext{
			CommonTlsContext: commonTLS(o, []string{o.UpstreamSPIFFEID}),
			Sni:              sni,
		}
		sr.Listeners = []*listenerv3.Listener{listener(o, "outbound", "upstream", nil, false)}
		sr.Clusters = append(sr.Clusters, plainCluster("upstream", o.UpstreamAddress, o.UpstreamPort, &corev3.TransportSocket{
			Name:       "envoy.transport_sockets.tls",
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(tls)},
		}))
	}
	if err := b.ValidateAll(); err != nil {
		return nil, fmt.Errorf("generated bootstrap is invalid: %w", err)
	}
	return b, nil
}

// bridgeCluster reaches the bridge's unix socket. gRPC needs HTTP/2, which
// Envoy only speaks upstream when told to.
func bridgeCluster(o Options) *clusterv3.Cluster {
	h2 := &httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
					Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
				},
			},
		},
	}
	return &clusterv3.Cluster{
		Name:                 BridgeCluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(time.Second),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: BridgeCluster,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{
				LbEndpoints: []*endpointv3.LbEndpoint{{
					HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
						Address: &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: o.SDSSocket}}},
					}},
				}},
			}},
		},
		TypedExtensionProtocolOptions: map[string]*anypb.Any{
			"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": mustAny(h2),
		},
	}
}

func apiConfigSource(api corev3.ApiConfigSource_ApiType) *corev3.ApiConfigSource {
	return &corev3.ApiConfigSource{
		ApiType:             api,
		TransportApiVersion: corev3.ApiVersion_V3,
		GrpcServices: []*corev3.GrpcService{{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: BridgeCluster}},
		}},
		SetNodeOnFirstMessageOnly: true,
	}
}

// sdsConfig says where a secret comes from: the bridge, over the chosen transport.
func sdsConfig(o Options) *corev3.ConfigSource {
	cs := &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3}
	if o.InitialFetchTimeout > 0 {
		cs.InitialFetchTimeout = durationpb.New(o.InitialFetchTimeout)
	} else {
		cs.InitialFetchTimeout = durationpb.New(0)
	}
	switch o.Transport {
	case TransportADS:
		cs.ConfigSourceSpecifier = &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}
	case TransportDelta:
		cs.ConfigSourceSpecifier = &corev3.ConfigSource_ApiConfigSource{ApiConfigSource: apiConfigSource(corev3.ApiConfigSource_DELTA_GRPC)}
	default:
		cs.ConfigSourceSpecifier = &corev3.ConfigSource_ApiConfigSource{ApiConfigSource: apiConfigSource(corev3.ApiConfigSource_GRPC)}
	}
	return cs
}

// peers are the SPIFFE IDs (or trust domains) the sidecar accepts.
func (o Options) peers() []string {
	if o.Mode == ModeOutbound {
		return []string{o.UpstreamSPIFFEID}
	}
	return o.AllowedSPIFFEIDs
}

// validationName is the validation context peers are checked with: ALL for
// Envoy's SPIFFE validator; with sds.disable_spiffe_cert_validation, when
// the bridge serves plain trusted_ca contexts and no ALL (as SPIRE), the
// bundle of the peers' one trust domain, spiffe://<td> — it serves the own
// trust domain and federated ones alike, where ROOTCA serves only the own.
func validationName(o Options, peers []string) string {
	if tds := trustDomains(peers); o.Names.AllBundlesOff && len(tds) == 1 {
		return tds[0]
	}
	return o.Names.AllBundles
}

// commonTLS presents the default SVID and accepts peers whose URI SAN is one
// of peers, checked by Envoy's SPIFFE validator against the trust domain's
// own bundle (ALL carries every bundle, one per trust domain). The SAN
// matchers sit in default_validation_context and Envoy merges them with the
// validation context that arrives over SDS.
func commonTLS(o Options, peers []string) *tlsv3.CommonTlsContext {
	var sans []*tlsv3.SubjectAltNameMatcher
	for _, p := range peers {
		m := &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: p}}
		if id, err := spiffeid.FromString(p); err == nil && id.Path() == "" {
			// A bare trust domain: any workload in it.
			m.MatchPattern = &matcherv3.StringMatcher_Prefix{Prefix: id.String() + "/"}
		}
		sans = append(sans, &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_URI, Matcher: m})
	}
	return &tlsv3.CommonTlsContext{
		TlsParams: &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2},
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{
			Name: o.Names.SVID, SdsConfig: sdsConfig(o),
		}},
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
			CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext: &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: sans},
				ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{
					Name: validationName(o, peers), SdsConfig: sdsConfig(o),
				},
			},
		},
	}
}

// listener is an HTTP listener routing everything to cluster. With tls it
// terminates mTLS and tells the app who the peer is (x-forwarded-client-cert
// carries the peer's URI SAN, its SPIFFE ID).
func listener(o Options, name, cluster string, tls *tlsv3.DownstreamTlsContext, inbound bool) *listenerv3.Listener {
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: name,
			VirtualHosts: []*routev3.VirtualHost{{
				Name:    cluster,
				Domains: []string{"*"},
				Routes: []*routev3.Route{{
					Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{
						ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
					}},
				}},
			}},
		}},
		HttpFilters: []*hcmv3.HttpFilter{{
			Name:       "envoy.filters.http.router",
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})},
		}},
		AccessLog: []*accesslogv3.AccessLog{{
			Name:       "envoy.access_loggers.stdout",
			ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(&streamv3.StdoutAccessLog{})},
		}},
	}
	if inbound {
		hcm.ForwardClientCertDetails = hcmv3.HttpConnectionManager_SANITIZE_SET
		hcm.SetCurrentClientCertDetails = &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{Uri: true}
	}
	fc := &listenerv3.FilterChain{
		Filters: []*listenerv3.Filter{{
			Name:       "envoy.filters.network.http_connection_manager",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(hcm)},
		}},
	}
	if tls != nil {
		fc.TransportSocket = &corev3.TransportSocket{
			Name:       "envoy.transport_sockets.tls",
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(tls)},
		}
	}
	return &listenerv3.Listener{
		Name:         name,
		Address:      socketAddress(o.ListenAddress, o.ListenPort),
		FilterChains: []*listenerv3.FilterChain{fc},
	}
}

// plainCluster reaches host:port; a host name is resolved by DNS and
// re-resolved, so a Kubernetes Service name works.
func plainCluster(name, host string, port uint32, ts *corev3.TransportSocket) *clusterv3.Cluster {
	typ := clusterv3.Cluster_STRICT_DNS
	if net.ParseIP(host) != nil {
		typ = clusterv3.Cluster_STATIC
	}
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: typ},
		ConnectTimeout:       durationpb.New(5 * time.Second),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{
				LbEndpoints: []*endpointv3.LbEndpoint{{
					HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
						Address: socketAddress(host, port),
					}},
				}},
			}},
		},
		TransportSocket: ts,
	}
}

func socketAddress(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		// Only a nil or unregistered message fails; every caller passes a
		// concrete generated type.
		panic(fmt.Sprintf("pack %T: %v", m, err))
	}
	return a
}

// SplitHostPort reads "host:port" for the upstream flag.
func SplitHostPort(s string) (string, uint32, error) {
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("%q: want HOST:PORT: %w", s, err)
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil || port == 0 {
		return "", 0, fmt.Errorf("%q: port %q is not a TCP port", s, p)
	}
	if host == "" {
		return "", 0, fmt.Errorf("%q: the host is empty", s)
	}
	return host, uint32(port), nil
}
