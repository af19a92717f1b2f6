package envoyboot

// The extensions a sidecar bootstrap for sds-bridge may use. Importing a
// package registers its messages, so that Parse can resolve a typed_config
// of that type; one that is not listed here is reported as unresolvable
// rather than silently accepted. Add a line when a shipped config needs
// another extension.
import (
	_ "github.com/cncf/xds/go/udpa/type/v1"                                                       // udpa.type.v1.TypedStruct
	_ "github.com/cncf/xds/go/xds/type/v3"                                                        // xds.type.v3.TypedStruct
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"            // envoy.access_loggers.file
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"          // envoy.access_loggers.stdout / stderr
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/health_check/v3"      // envoy.filters.http.health_check
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"              // envoy.filters.http.rbac
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"            // envoy.filters.http.router
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3" // envoy.filters.listener.tls_inspector
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"      // envoy.filters.network.rbac
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3" // envoy.filters.network.tcp_proxy
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3" // tls contexts, SPIFFE cert validator config
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"        // HttpProtocolOptions
)
