package envoyboot

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"

	udpatypev1 "github.com/cncf/xds/go/udpa/type/v1"
	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	"github.com/envoyproxy/go-control-plane/envoy/annotations"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// Validate checks an Envoy bootstrap (YAML) as strictly as it can be
// checked without Envoy, for a bridge serving served:
//
//   - it parses into envoy.config.bootstrap.v3.Bootstrap with no unknown
//     field and every typed_config of a known type (Parse), reading enums
//     and single values for lists as leniently as Envoy does;
//   - protoc-gen-validate's ValidateAll passes on the bootstrap and on every
//     message packed in an Any (typed_config, typed_extension_protocol_options,
//     TypedStruct), recursively;
//   - no field or enum value it sets is deprecated and disallowed by default
//     (Envoy refuses those; plain deprecations are warnings, see Lint);
//   - every cluster named by an envoy_grpc service, a route, a weighted
//     cluster, a mirror policy, a tcp_proxy or an http_uri is a static
//     cluster, and a cluster that fetches secrets over envoy_grpc comes
//     after the cluster it fetches them from;
//   - every config source says resource_api_version: V3 and every gRPC API
//     config source transport_api_version: V3;
//   - every secret comes from the bridge (a static cluster dialling
//     served.Socket, directly or over ADS) or from static_resources.secrets,
//     and each name asked of the bridge is one it serves as that kind of
//     secret; the bridge is asked for nothing but secrets;
//   - the bridge's cluster speaks HTTP/2 to unix-socket (pipe) endpoints;
//   - the last HTTP filter of every http_connection_manager is the router.
//
// Every problem found is reported, each with the path to the field and its
// YAML line.
func Validate(bootstrapYAML []byte, served ServedNames) error {
	_, err := Lint(bootstrapYAML, served)
	return err
}

// Result is what Lint finds in a bootstrap Envoy accepts.
type Result struct {
	// Warnings are what Envoy logs but starts with (deprecated fields),
	// each "YAML line N: path: message".
	Warnings []string
	// Asked lists, sorted, the secret names asked of the bridge.
	Asked []string
}

// Lint is Validate that also returns what Envoy would warn about.
func Lint(bootstrapYAML []byte, served ServedNames) (Result, error) {
	b, doc, err := parse(bootstrapYAML)
	if err != nil {
		return Result{}, err
	}
	return check(b, doc, served)
}

// Check is Validate for a parsed bootstrap; with no YAML at hand its
// messages carry paths but no lines, and warnings are dropped.
func Check(b *bootstrapv3.Bootstrap, served ServedNames) error {
	_, err := check(b, nil, served)
	return err
}

func check(b *bootstrapv3.Bootstrap, doc *yaml.Node, served ServedNames) (Result, error) {
	c := newChecker(b, served)
	if err := b.ValidateAll(); err != nil {
		c.pgv(err, "")
	}
	sr := b.GetStaticResources()
	for i, cl := range sr.GetClusters() {
		if j, dup := c.clusters[cl.GetName()]; dup {
			c.errorf(fmt.Sprintf("static_resources.clusters[%d]", i), "cluster %q is already static_resources.clusters[%d]", cl.GetName(), j)
			continue
		}
		c.clusters[cl.GetName()] = i
	}
	listeners := map[string]int{}
	for i, l := range sr.GetListeners() {
		if j, dup := listeners[l.GetName()]; dup {
			c.errorf(fmt.Sprintf("static_resources.listeners[%d]", i), "listener %q is already static_resources.listeners[%d]", l.GetName(), j)
		}
		listeners[l.GetName()] = i
	}
	for _, s := range sr.GetSecrets() {
		c.secrets[s.GetName()] = true
	}
	dr := b.GetDynamicResources()
	c.dynamicClusters = dr.GetCdsConfig() != nil || dr.GetCdsResourcesLocator() != ""

	c.walk(b.ProtoReflect(), "", nil, doc)

	for i, cl := range sr.GetClusters() {
		if c.bridge[cl.GetName()] {
			c.checkBridgeCluster(cl, fmt.Sprintf("static_resources.clusters[%s]", label(cl.ProtoReflect(), i)))
		}
	}
	if len(c.bridge) == 0 && c.askedBridge {
		if c.served.Socket == "" {
			c.errorf("static_resources.clusters", "no cluster %q: the bridge's secrets are fetched from it", BridgeCluster)
		} else {
			c.errorf("static_resources.clusters", "no cluster dials the bridge's socket %s (sds.socket): give one a pipe endpoint on that path", c.served.Socket)
		}
	}
	slices.Sort(c.asked)
	r := Result{Asked: c.asked}
	for _, w := range c.warns {
		r.Warnings = append(r.Warnings, c.format(w).Error())
	}
	if len(c.errs) == 0 {
		return r, nil
	}
	errs := make([]error, len(c.errs))
	for i, p := range c.errs {
		errs[i] = c.format(p)
	}
	return r, fmt.Errorf("invalid bootstrap:\n%w", errors.Join(errs...))
}

// newChecker is a checker for b that knows, before the walk, which
// clusters are the bridge and whether ADS reaches it.
func newChecker(b *bootstrapv3.Bootstrap, served ServedNames) *checker {
	c := &checker{served: served.withDefaults(), clusters: map[string]int{}, secrets: map[string]bool{},
		bridge: map[string]bool{}, current: -1, cl: b.GetStaticResources().GetClusters(),
		lines: map[string]int{}, maps: map[string]*yaml.Node{}, aliases: map[string]string{}}
	for _, cl := range b.GetStaticResources().GetClusters() {
		if c.dialsBridge(cl) {
			c.bridge[cl.GetName()] = true
		}
	}
	if ads := b.GetDynamicResources().GetAdsConfig(); ads != nil {
		c.hasADS = true
		c.adsGrpcServices = ads.GetGrpcServices()
		c.adsOther = !c.grpcToBridge(ads.GetGrpcServices())
	}
	return c
}

// dialsBridge: cl has a pipe endpoint on the bridge's socket (or, with no
// socket given, is called BridgeCluster).
func (c *checker) dialsBridge(cl *clusterv3.Cluster) bool {
	if c.served.Socket == "" {
		return cl.GetName() == BridgeCluster
	}
	return slices.Contains(pipePaths(cl), c.served.Socket)
}

// pipePaths are the distinct unix socket paths of cl's endpoints.
func pipePaths(cl *clusterv3.Cluster) []string {
	var paths []string
	for _, le := range cl.GetLoadAssignment().GetEndpoints() {
		for _, e := range le.GetLbEndpoints() {
			if p := e.GetEndpoint().GetAddress().GetPipe().GetPath(); p != "" && !slices.Contains(paths, p) {
				paths = append(paths, p)
			}
		}
	}
	return paths
}

type checker struct {
	served   ServedNames
	clusters map[string]int  // static cluster name → index
	secrets  map[string]bool // static_resources.secrets names
	bridge   map[string]bool // static clusters that reach the bridge
	cl       []*clusterv3.Cluster
	// adsGrpcServices are where ads_config points.
	adsGrpcServices []*corev3.GrpcService
	// dynamicClusters: CDS may add clusters, so clusters named by routes
	// cannot be checked; envoy_grpc clusters must be static anyway.
	dynamicClusters bool
	hasADS          bool
	adsOther        bool // ads_config points somewhere other than the bridge
	askedBridge     bool
	asked           []string // secret names asked of the bridge
	// current is the index of the static cluster being walked, -1 outside.
	current int
	// lines maps a path (as errors name it, and with list indexes as
	// protoc-gen-validate names them) to its YAML line.
	lines map[string]int
	// maps holds the YAML mapping of each message walked, to find the
	// line of a field left at its default (stat_prefix: '').
	maps map[string]*yaml.Node
	// aliases maps a list element's path by index ("clusters[1]", as
	// protoc-gen-validate names it) to its path by name ("clusters[backend]").
	aliases map[string]string
	errs    []problem
	warns   []problem
}

type problem struct{ path, msg string }

func (c *checker) errorf(path, format string, args ...any) {
	c.errs = append(c.errs, problem{path, fmt.Sprintf(format, args...)})
}

func (c *checker) warnf(path, format string, args ...any) {
	c.warns = append(c.warns, problem{path, fmt.Sprintf(format, args...)})
}

// format renders p with the YAML line of its path, or of the nearest
// enclosing field that has one.
func (c *checker) format(p problem) error {
	path := c.byName(p.path)
	l, ok := c.lines[p.path] // a duplicate is found by its index
	if !ok {
		l = c.lineOf(path)
	}
	if l > 0 {
		return fmt.Errorf("YAML line %d: %s: %s", l, cmp.Or(path, "bootstrap"), p.msg)
	}
	return fmt.Errorf("%s: %s", cmp.Or(path, "bootstrap"), p.msg)
}

func (c *checker) lineOf(path string) int {
	for q := path; q != ""; q = parent(q) {
		if l, ok := c.lines[q]; ok {
			return l
		}
		// A field left at its default is not walked; its key is still in
		// the enclosing mapping.
		if up := parent(q); strings.HasPrefix(q, up+".") {
			if k, _ := mapEntry(c.maps[up], q[len(up)+1:]); k != nil {
				return k.Line
			}
		}
	}
	return 0
}

// byName rewrites the list indexes in path that have a name ("[0]" →
// "[inbound]"), outermost first, as the walk names them.
func (c *checker) byName(path string) string {
	for i := 0; i < len(path); i++ {
		if path[i] != ']' {
			continue
		}
		if named, ok := c.aliases[path[:i+1]]; ok {
			path = named + path[i+1:]
			i = len(named) - 1
		}
	}
	return path
}

// parent drops the last element of a path: a .field, a [key] or an (Any type).
func parent(p string) string {
	i := strings.LastIndexAny(p, ".[(")
	if i < 0 {
		return ""
	}
	// A dot inside brackets or parentheses is part of a key or type name.
	depth := 0
	for j := len(p) - 1; j >= 0; j-- {
		switch p[j] {
		case ']', ')':
			depth++
		case '[', '(':
			depth--
			if depth == 0 {
				return p[:j]
			}
		case '.':
			if depth == 0 {
				return p[:j]
			}
		}
	}
	return ""
}

// walk visits m (held by field in, nil at the root) and everything below it,
// unpacking every Any. n is m's YAML (nil when there is none): the walk
// records the line of every path it passes, for the messages.
func (c *checker) walk(m protoreflect.Message, path string, in protoreflect.FieldDescriptor, n *yaml.Node) {
	if n != nil {
		n = deref(n)
		if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
			n = deref(n.Content[0])
		}
		c.line(path, n)
		if n.Kind == yaml.MappingNode {
			c.maps[path] = n
		}
	}
	if a, ok := m.Interface().(*anypb.Any); ok {
		c.walkAny(a, path, in, n)
		return
	}
	c.visit(m.Interface(), path, in)
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		p := join(path, string(fd.Name()))
		var vn *yaml.Node
		if n != nil {
			k, val := mapEntry(n, string(fd.Name()), fd.JSONName())
			if k != nil {
				c.line(p, k)
				vn = deref(val)
			}
		}
		c.checkDeprecated(fd, v, p)
		if fd.Message() == nil {
			return true
		}
		switch {
		case fd.IsList():
			c.walkList(m, fd, v.List(), p, vn)
		case fd.IsMap():
			if fd.MapValue().Message() == nil {
				return true
			}
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				var en *yaml.Node
				if vn != nil {
					_, en = mapEntry(vn, k.String())
				}
				c.walk(mv.Message(), fmt.Sprintf("%s[%s]", p, k.String()), fd, en)
				return true
			})
		default:
			c.walk(v.Message(), p, fd, vn)
		}
		return true
	})
}

// walkList walks the messages of list field fd of m, at path p; vn is the
// list's YAML. Elements get a path by label (a name where they have one),
// with their index form kept as an alias for messages that use it.
func (c *checker) walkList(m protoreflect.Message, fd protoreflect.FieldDescriptor, l protoreflect.List, p string, vn *yaml.Node) {
	clusters := m.Descriptor().FullName() == "envoy.config.bootstrap.v3.Bootstrap.StaticResources" && fd.Name() == "clusters"
	for i := 0; i < l.Len(); i++ {
		e := l.Get(i).Message()
		ep := fmt.Sprintf("%s[%s]", p, label(e, i))
		if byIndex := fmt.Sprintf("%s[%d]", p, i); byIndex != ep {
			c.aliases[byIndex] = ep
		}
		var en *yaml.Node
		if vn != nil && vn.Kind == yaml.SequenceNode && i < len(vn.Content) {
			en = vn.Content[i]
			c.line(fmt.Sprintf("%s[%d]", p, i), deref(en))
		}
		if clusters {
			c.current = i
		}
		c.walk(e, ep, fd, en)
		if clusters {
			c.current = -1
		}
	}
}

// line records the YAML line of path, the first time it is seen (a
// field's key comes before its value).
func (c *checker) line(path string, n *yaml.Node) {
	if n == nil || path == "" || n.Line == 0 {
		return
	}
	if _, ok := c.lines[path]; !ok {
		c.lines[path] = n.Line
	}
}

// walkAny unpacks a (Parse has resolved its type), validates what is inside
// and walks it. A TypedStruct is unpacked once more: its type_url names the
// real config and its value must parse into that type strictly.
func (c *checker) walkAny(a *anypb.Any, path string, in protoreflect.FieldDescriptor, n *yaml.Node) {
	inner, err := a.UnmarshalNew()
	if errors.Is(err, protoregistry.NotFound) {
		c.unknownType(path, a.GetTypeUrl())
		return
	}
	if err != nil {
		c.errorf(path, "typed_config %s: %v", a.GetTypeUrl(), err)
		return
	}
	path = fmt.Sprintf("%s(%s)", path, inner.ProtoReflect().Descriptor().FullName())
	c.line(path, n)
	var typeURL string
	var value *structpb.Struct
	switch ts := inner.(type) {
	case *xdstypev3.TypedStruct:
		typeURL, value = ts.GetTypeUrl(), ts.GetValue()
	case *udpatypev1.TypedStruct:
		typeURL, value = ts.GetTypeUrl(), ts.GetValue()
	}
	if typeURL != "" {
		mt, err := protoregistry.GlobalTypes.FindMessageByURL(typeURL)
		if err != nil {
			c.unknownType(join(path, "type_url"), typeURL)
			return
		}
		js, err := protojson.Marshal(value)
		if err != nil {
			c.errorf(path, "TypedStruct value: %v", err)
			return
		}
		m := mt.New().Interface()
		if err := protojson.Unmarshal(js, m); err != nil {
			c.errorf(path, "TypedStruct value as %s: %s", mt.Descriptor().FullName(), jsonPosition.ReplaceAllString(err.Error(), ""))
			return
		}
		inner = m
		path = fmt.Sprintf("%s(%s)", path, mt.Descriptor().FullName())
		if n != nil {
			_, n = mapEntry(n, "value")
		}
	}
	// Walk first: it records the lines protoc-gen-validate's paths need.
	c.walk(inner.ProtoReflect(), path, in, n)
	if v, ok := inner.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			c.pgv(err, path)
		}
	}
}

// unknownType reports a typed_config (or TypedStruct) of a type that no
// package of Envoy's API registers. A name one or two letters from one of
// Envoy's is a misspelling: an error. Anything else is taken for a
// private extension, which Envoy loads only when built with it: a
// warning, its config unchecked, and the check goes on.
func (c *checker) unknownType(path, url string) {
	name := url[strings.LastIndex(url, "/")+1:]
	if near := nearestType(name); near != "" {
		c.errorf(path, "@type %s is in no package of Envoy's API; did you mean type.googleapis.com/%s?", url, near)
		return
	}
	c.warnf(path, "@type %s is in none of the %d packages of Envoy's API this tool knows: a private extension? "+
		"Envoy loads it only if it was built with it; its config is not checked", url, ExtensionPackages)
}

// nearestType is the registered message name within two edits of name,
// or "".
func nearestType(name string) string {
	best, bestD := "", 3
	protoregistry.GlobalTypes.RangeMessages(func(mt protoreflect.MessageType) bool {
		known := string(mt.Descriptor().FullName())
		if abs(len(known)-len(name)) < bestD {
			if d := editDistance(name, known, bestD); d < bestD {
				best, bestD = known, d
			}
		}
		return true
	})
	return best
}

// editDistance is the Levenshtein distance of a and b, or limit when it is
// limit or more.
func editDistance(a, b string, limit int) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		rowMin := cur[0]
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			rowMin = min(rowMin, cur[j])
		}
		if rowMin >= limit {
			return limit
		}
		prev, cur = cur, prev
	}
	return min(prev[len(b)], limit)
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

// pgvError is what protoc-gen-validate's errors have in common.
type pgvError interface {
	error
	Field() string
	Cause() error
}

// pgv reports a protoc-gen-validate error as one problem per violation,
// each at the path of the field that breaks the rule, so it gets a line.
// The rule stays as protoc-gen-validate words it ("invalid
// SocketAddress.PortValue: value must be less than or equal to 65535").
func (c *checker) pgv(err error, path string) {
	if m, ok := err.(interface{ AllErrors() []error }); ok {
		for _, e := range m.AllErrors() {
			c.pgv(e, path)
		}
		return
	}
	pe, ok := err.(pgvError)
	if !ok {
		c.errorf(path, "%v", err)
		return
	}
	p := join(path, pgvField(pe.Field()))
	if cause := pe.Cause(); cause != nil {
		if _, multi := cause.(interface{ AllErrors() []error }); multi {
			c.pgv(cause, p)
			return
		}
		if _, nested := cause.(pgvError); nested {
			c.pgv(cause, p)
			return
		}
	}
	c.errorf(p, "%v", err)
}

// pgvField turns protoc-gen-validate's Go field name ("StaticResources",
// "Clusters[0]") into the proto name the walk's paths use.
func pgvField(f string) string {
	name, rest, _ := strings.Cut(f, "[")
	if rest != "" {
		rest = "[" + rest
	}
	var b strings.Builder
	for i, r := range name {
		if r >= 'A' && r <= 'Z' {
			if i > 0 {
				b.WriteByte('_')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String() + rest
}

// visit holds the checks that look at one message at a time.
func (c *checker) visit(m proto.Message, path string, in protoreflect.FieldDescriptor) {
	switch x := m.(type) {
	case *corev3.GrpcService_EnvoyGrpc:
		c.refCluster(x.GetClusterName(), join(path, "cluster_name"), true)
	case *routev3.RouteAction:
		if x.GetCluster() != "" {
			c.refCluster(x.GetCluster(), join(path, "cluster"), false)
		}
	case *routev3.WeightedCluster_ClusterWeight:
		c.refCluster(x.GetName(), join(path, "name"), false)
	case *routev3.RouteAction_RequestMirrorPolicy:
		if x.GetCluster() != "" {
			c.refCluster(x.GetCluster(), join(path, "cluster"), false)
		}
	case *tcpproxyv3.TcpProxy:
		if x.GetCluster() != "" {
			c.refCluster(x.GetCluster(), join(path, "cluster"), false)
		}
	case *tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight:
		c.refCluster(x.GetName(), join(path, "name"), false)
	case *corev3.HttpUri:
		if x.GetCluster() != "" {
			c.refCluster(x.GetCluster(), join(path, "cluster"), false)
		}
	case *corev3.ConfigSource:
		if x.GetResourceApiVersion() != corev3.ApiVersion_V3 {
			c.errorf(join(path, "resource_api_version"), "resource_api_version is %s; Envoy accepts only V3", x.GetResourceApiVersion())
		}
		forSecret := in != nil && in.ContainingMessage().FullName() == "envoy.extensions.transport_sockets.tls.v3.SdsSecretConfig"
		if !forSecret && c.fromBridge(x) {
			c.errorf(path, "asks the bridge for resources other than secrets; sds-bridge serves only SDS (also over ADS)")
		}
	case *corev3.ApiConfigSource:
		switch x.GetApiType() {
		case corev3.ApiConfigSource_GRPC, corev3.ApiConfigSource_DELTA_GRPC, corev3.ApiConfigSource_REST,
			corev3.ApiConfigSource_AGGREGATED_GRPC, corev3.ApiConfigSource_AGGREGATED_DELTA_GRPC:
			if x.GetTransportApiVersion() != corev3.ApiVersion_V3 {
				c.errorf(join(path, "transport_api_version"), "transport_api_version is %s; Envoy accepts only V3", x.GetTransportApiVersion())
			}
		}
		if c.grpcToBridge(x.GetGrpcServices()) {
			switch x.GetApiType() {
			case corev3.ApiConfigSource_GRPC, corev3.ApiConfigSource_DELTA_GRPC:
			default:
				c.errorf(join(path, "api_type"), "api_type %s: the bridge speaks GRPC and DELTA_GRPC", x.GetApiType())
			}
		}
	case *tlsv3.SdsSecretConfig:
		c.checkSecret(x, path, in)
	case *hcmv3.HttpConnectionManager:
		fs := x.GetHttpFilters()
		if n := len(fs); n > 0 && !isRouter(fs[n-1]) {
			c.errorf(join(path, "http_filters"), "the last HTTP filter is %q; it must be the router (envoy.filters.http.router), or no request is ever forwarded", fs[n-1].GetName())
		}
	}
}

func isRouter(f *hcmv3.HttpFilter) bool {
	tc := f.GetTypedConfig()
	if tc == nil {
		return f.GetName() == "envoy.filters.http.router"
	}
	if tc.MessageIs(&routerv3.Router{}) {
		return true
	}
	inner, err := tc.UnmarshalNew()
	if err != nil {
		// Of a type not known here (reported as such): it may be a
		// private terminal filter.
		return true
	}
	var url string
	switch ts := inner.(type) {
	case *xdstypev3.TypedStruct:
		url = ts.GetTypeUrl()
	case *udpatypev1.TypedStruct:
		url = ts.GetTypeUrl()
	}
	return strings.HasSuffix(url, "/"+string((&routerv3.Router{}).ProtoReflect().Descriptor().FullName()))
}

// refCluster records a use of cluster name. grpc marks an envoy_grpc
// service: it must be static even when CDS is configured, and a static
// cluster may only use one defined before it.
func (c *checker) refCluster(name, path string, grpc bool) {
	if c.bridge[name] {
		c.askedBridge = c.askedBridge || grpc
	}
	i, ok := c.clusters[name]
	switch {
	case !ok && (grpc || !c.dynamicClusters):
		c.errorf(path, "cluster %q is not defined in static_resources.clusters (clusters: %s)", name, c.clusterList())
	case ok && grpc && c.current >= 0 && i >= c.current:
		c.errorf(path, "cluster %q must be defined before the cluster that uses it (it is static_resources.clusters[%d])", name, i)
	}
}

func (c *checker) clusterList() string {
	names := make([]string, 0, len(c.clusters))
	for n := range c.clusters {
		names = append(names, fmt.Sprintf("%q", n))
	}
	slices.Sort(names)
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

func (c *checker) grpcToBridge(gs []*corev3.GrpcService) bool {
	for _, g := range gs {
		if c.bridge[g.GetEnvoyGrpc().GetClusterName()] {
			return true
		}
	}
	return false
}

// fromBridge reports whether resources of cs are fetched from the bridge.
func (c *checker) fromBridge(cs *corev3.ConfigSource) bool {
	if cs.GetAds() != nil {
		return c.hasADS && !c.adsOther
	}
	return c.grpcToBridge(cs.GetApiConfigSource().GetGrpcServices())
}

func (c *checker) checkSecret(s *tlsv3.SdsSecretConfig, path string, in protoreflect.FieldDescriptor) {
	kind := kindOther
	if in != nil {
		switch in.Name() {
		case "tls_certificate_sds_secret_configs":
			kind = kindCertificate
		case "validation_context_sds_secret_config":
			kind = kindValidation
		}
	}
	name := s.GetName()
	cs := s.GetSdsConfig()
	switch {
	case cs == nil:
		if !c.secrets[name] {
			c.errorf(path, "secret %q has no sds_config and is not in static_resources.secrets", name)
		}
		return
	case cs.GetAds() != nil && !c.hasADS:
		c.errorf(join(path, "sds_config.ads"), "secret %q is to come over ADS, but dynamic_resources.ads_config is missing", name)
		return
	case !c.fromBridge(cs):
		c.errorf(join(path, "sds_config"), "secret %q is not fetched from the bridge: %s", name, c.notBridge(cs))
		return
	}
	c.askedBridge = true
	if !slices.Contains(c.asked, name) {
		c.asked = append(c.asked, name)
	}
	if err := c.served.serves(name, kind); err != nil {
		c.errorf(join(path, "name"), "secret %q (%s) is not served: %v", name, kind, err)
	}
}

// notBridge says why cs does not reach the bridge, and what would.
func (c *checker) notBridge(cs *corev3.ConfigSource) string {
	if c.served.Socket == "" {
		return fmt.Sprintf("use envoy_grpc with cluster_name %q (or ads with an ads_config pointing there)", BridgeCluster)
	}
	gs := cs.GetApiConfigSource().GetGrpcServices()
	if cs.GetAds() != nil {
		gs = nil
		if c.hasADS {
			gs = c.adsGrpcServices
		}
	}
	for _, g := range gs {
		name := g.GetEnvoyGrpc().GetClusterName()
		i, ok := c.clusters[name]
		if !ok {
			continue
		}
		if paths := pipePaths(c.cl[i]); len(paths) > 0 {
			return fmt.Sprintf("cluster %q dials %s, but the bridge listens on %s (sds.socket)", name, strings.Join(paths, ", "), c.served.Socket)
		}
		return fmt.Sprintf("cluster %q has no pipe endpoint (its endpoint is not a pipe): the bridge listens on the unix socket %s (sds.socket)", name, c.served.Socket)
	}
	if len(c.bridge) == 0 {
		return fmt.Sprintf("no static cluster dials the bridge's socket %s (sds.socket): give one a pipe endpoint on that path and fetch secrets over envoy_grpc (or ADS) from it", c.served.Socket)
	}
	return fmt.Sprintf("fetch it over envoy_grpc (or ADS) from a static cluster whose pipe endpoint is the bridge's socket %s (sds.socket)", c.served.Socket)
}

// checkBridgeCluster: gRPC needs HTTP/2, and the bridge listens only on a
// unix socket.
func (c *checker) checkBridgeCluster(cl *clusterv3.Cluster, path string) {
	h2 := cl.GetHttp2ProtocolOptions() != nil // deprecated, reported as such by the walk
	if a, ok := cl.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]; ok {
		var o httpv3.HttpProtocolOptions
		if err := a.UnmarshalTo(&o); err == nil && o.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil {
			h2 = true
		}
	}
	if !h2 {
		c.errorf(path, "the bridge speaks gRPC: set typed_extension_protocol_options[envoy.extensions.upstreams.http.v3.HttpProtocolOptions].explicit_http_config.http2_protocol_options")
	}
	pipes := 0
	for _, le := range cl.GetLoadAssignment().GetEndpoints() {
		for _, e := range le.GetLbEndpoints() {
			p := e.GetEndpoint().GetAddress().GetPipe()
			if p == nil {
				c.errorf(path, "endpoint %v is not a pipe: the bridge listens on a unix socket (address: {pipe: {path: ...}})", e.GetEndpoint().GetAddress())
				continue
			}
			if c.served.Socket != "" && p.GetPath() != c.served.Socket {
				c.errorf(path, "endpoint pipe %s is not the bridge's socket %s (sds.socket): Envoy would spread SDS streams over both", p.GetPath(), c.served.Socket)
			}
			pipes++
		}
	}
	if pipes == 0 {
		c.errorf(join(path, "load_assignment"), "no pipe endpoint: give the bridge's socket as address.pipe.path")
	}
	if t := cl.GetType(); cl.GetClusterDiscoveryType() != nil && t != clusterv3.Cluster_STATIC {
		c.errorf(join(path, "type"), "%s: a unix socket endpoint needs type STATIC", t)
	}
}

// checkDeprecated reports deprecated fields and enum values as Envoy does:
// a warning, unless Envoy has made the deprecation fatal
// (disallowed_by_default), which it refuses to load.
func (c *checker) checkDeprecated(fd protoreflect.FieldDescriptor, v protoreflect.Value, path string) {
	if o, ok := fd.Options().(*descriptorpb.FieldOptions); ok && o.GetDeprecated() {
		if proto.GetExtension(o, annotations.E_DisallowedByDefault).(bool) {
			c.errorf(path, "field is deprecated and disallowed by default in Envoy's API: Envoy refuses it")
		} else {
			c.warnf(path, "field is deprecated in Envoy's API%s (Envoy logs a warning)", since(o))
		}
	}
	if fd.Enum() == nil {
		return
	}
	check := func(n protoreflect.EnumNumber) {
		ev := fd.Enum().Values().ByNumber(n)
		if ev == nil {
			c.errorf(path, "enum value %d is not defined", n)
			return
		}
		o, ok := ev.Options().(*descriptorpb.EnumValueOptions)
		if !ok || !o.GetDeprecated() {
			return
		}
		if proto.GetExtension(o, annotations.E_DisallowedByDefaultEnum).(bool) {
			c.errorf(path, "enum value %s is deprecated and disallowed by default in Envoy's API: Envoy refuses it", ev.Name())
		} else {
			c.warnf(path, "enum value %s is deprecated in Envoy's API (Envoy logs a warning)", ev.Name())
		}
	}
	if fd.IsList() {
		for i := 0; i < v.List().Len(); i++ {
			check(v.List().Get(i).Enum())
		}
		return
	}
	if !fd.IsMap() {
		check(v.Enum())
	}
}

func since(o *descriptorpb.FieldOptions) string {
	if v := proto.GetExtension(o, annotations.E_DeprecatedAtMinorVersion).(string); v != "" {
		return " since " + v
	}
	return ""
}

// label names a list element by its name field when it has one, so paths
// read static_resources.clusters[sds-bridge] rather than [0].
func label(m protoreflect.Message, i int) string {
	if fd := m.Descriptor().Fields().ByName("name"); fd != nil && fd.Kind() == protoreflect.StringKind && !fd.IsList() {
		if s := m.Get(fd).String(); s != "" {
			return s
		}
	}
	return fmt.Sprint(i)
}

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

// SecretNames lists, sorted, the secret names b asks of the bridge,
// whether the bridge serves them or not.
func SecretNames(b *bootstrapv3.Bootstrap) []string {
	served := DefaultNames()
	served.Socket = "" // the cluster named BridgeCluster, as BridgeSocket
	c := newChecker(b, served)
	c.walk(b.ProtoReflect(), "", nil, nil)
	slices.Sort(c.asked)
	return c.asked
}

// BridgeSocket returns the unix socket path of the bridge's cluster, to
// compare with the bridge's sds.socket.
func BridgeSocket(b *bootstrapv3.Bootstrap) (string, error) {
	for _, cl := range b.GetStaticResources().GetClusters() {
		if cl.GetName() != BridgeCluster {
			continue
		}
		paths := pipePaths(cl)
		if len(paths) != 1 {
			return "", fmt.Errorf("cluster %q has %d socket paths %q, want one", BridgeCluster, len(paths), paths)
		}
		return paths[0], nil
	}
	return "", fmt.Errorf("no cluster %q", BridgeCluster)
}
