{{/*
Envoy bootstraps, rendered from values: the same shape as
configs/envoy/sidecar-inbound.yaml and sidecar-outbound.yaml (checked there
against Envoy's protos; the chart's tests check these renders the same way,
with sds-bridge-envoy --check). Secrets: "default" (the pod's SVID) and "ALL"
(every bundle, Envoy's SPIFFE validator) from the bridge's socket.
*/}}
{{- define "sds-bridge.envoySDS" -}}
sds_config:
  api_config_source:
    api_type: GRPC
    transport_api_version: V3
    grpc_services:
      - envoy_grpc:
          cluster_name: sds-bridge
    set_node_on_first_message_only: true
  # The bridge starts first and already holds the secrets; after this
  # something is wrong (name, socket, bridge down) and Envoy finishes
  # starting so its logs say what is missing.
  initial_fetch_timeout: {{ . }}
  resource_api_version: V3
{{- end }}

{{/* The TLS context both directions share: (dict "root" $ "peers" (list ids)). */}}
{{- define "sds-bridge.envoyTLS" -}}
tls_params:
  tls_minimum_protocol_version: TLSv1_2
tls_certificate_sds_secret_configs:
  - name: default
    {{- include "sds-bridge.envoySDS" .root.Values.envoy.initialFetchTimeout | nindent 4 }}
combined_validation_context:
  default_validation_context:
    # The peers allowed, by SPIFFE ID (URI SAN).
    match_typed_subject_alt_names:
      {{- range .peers }}
      - san_type: URI
        matcher:
          exact: {{ . }}
      {{- end }}
  validation_context_sds_secret_config:
    name: ALL
    {{- include "sds-bridge.envoySDS" .root.Values.envoy.initialFetchTimeout | nindent 4 }}
{{- end }}

{{- define "sds-bridge.envoyBridgeCluster" -}}
# The bridge over its unix socket; gRPC needs HTTP/2.
- name: sds-bridge
  type: STATIC
  connect_timeout: 1s
  load_assignment:
    cluster_name: sds-bridge
    endpoints:
      - lb_endpoints:
          - endpoint:
              address:
                pipe:
                  path: /run/sds-bridge/sds.sock
  typed_extension_protocol_options:
    envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
      '@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
      explicit_http_config:
        http2_protocol_options: {}
{{- end }}

{{- define "sds-bridge.envoyHTTP" -}}
- name: envoy.filters.network.http_connection_manager
  typed_config:
    '@type': type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
    stat_prefix: {{ .name }}
    route_config:
      name: {{ .name }}
      virtual_hosts:
        - name: {{ .cluster }}
          domains: ["*"]
          routes:
            - match:
                prefix: /
              route:
                cluster: {{ .cluster }}
    http_filters:
      - name: envoy.filters.http.router
        typed_config:
          '@type': type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
    access_log:
      - name: envoy.access_loggers.stdout
        typed_config:
          '@type': type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
    {{- if eq .name "inbound" }}
    forward_client_cert_details: SANITIZE_SET
    # x-forwarded-client-cert tells the app who called: URI=<peer SPIFFE ID>.
    set_current_client_cert_details:
      uri: true
    {{- end }}
{{- end }}

{{/* The backend's Envoy: mTLS on 0.0.0.0:<backend.port> to the app on loopback. */}}
{{- define "sds-bridge.envoyInbound" -}}
{{- $root := . -}}
{{- $peers := list -}}
{{- range .Values.backend.allowedCallers }}
{{- $peers = append $peers (include "sds-bridge.spiffeID" (dict "root" $root "sa" .)) -}}
{{- end -}}
node:
  id: {{ .Release.Namespace }}/backend
  cluster: sds-bridge-sidecar
static_resources:
  listeners:
    - name: inbound
      address:
        socket_address:
          address: 0.0.0.0
          port_value: {{ .Values.backend.port }}
      filter_chains:
        - filters:
            {{- include "sds-bridge.envoyHTTP" (dict "name" "inbound" "cluster" "local_app") | nindent 12 }}
          transport_socket:
            name: envoy.transport_sockets.tls
            typed_config:
              '@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
              common_tls_context:
                {{- include "sds-bridge.envoyTLS" (dict "root" $root "peers" $peers) | nindent 16 }}
              require_client_certificate: true
  clusters:
    {{- include "sds-bridge.envoyBridgeCluster" . | nindent 4 }}
    - name: local_app
      type: STATIC
      connect_timeout: 5s
      load_assignment:
        cluster_name: local_app
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address:
                      address: 127.0.0.1
                      port_value: {{ .Values.backend.app.port }}
{{- end }}

{{/* The frontend's Envoy: 127.0.0.1:<listenPort> to the backend over mTLS. */}}
{{- define "sds-bridge.envoyOutbound" -}}
{{- $root := . -}}
{{- $upstream := include "sds-bridge.dnsName" (dict "root" $root "sa" "backend") -}}
node:
  id: {{ .Release.Namespace }}/frontend
  cluster: sds-bridge-sidecar
static_resources:
  listeners:
    - name: outbound
      address:
        socket_address:
          address: 127.0.0.1
          port_value: {{ .Values.frontend.listenPort }}
      filter_chains:
        - filters:
            {{- include "sds-bridge.envoyHTTP" (dict "name" "outbound" "cluster" "upstream") | nindent 12 }}
  clusters:
    {{- include "sds-bridge.envoyBridgeCluster" . | nindent 4 }}
    - name: upstream
      type: STRICT_DNS
      connect_timeout: 5s
      load_assignment:
        cluster_name: upstream
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address:
                      address: {{ $upstream }}
                      port_value: {{ .Values.backend.port }}
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          '@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
          common_tls_context:
            {{- include "sds-bridge.envoyTLS" (dict "root" $root "peers" (list (include "sds-bridge.spiffeID" (dict "root" $root "sa" .Values.backend.serviceAccountName)))) | nindent 12 }}
          sni: {{ $upstream }}
{{- end }}
