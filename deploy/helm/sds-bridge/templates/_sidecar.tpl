{{/*
The bridge as a native sidecar, for this chart's pods and for your own
charts. With sds-bridge as a dependency (its workloads off:
envoy.enabled=false, postgres.enabled=false), in your pod spec:

  initContainers:
    {{- include "sds-bridge.sidecar" $args | nindent 4 }}
    # ... your own init containers after it
  volumes:
    {{- include "sds-bridge.sidecarVolumes" $args | nindent 4 }}

and a ConfigMap with the bridge's config:

  data:
    config.yaml: |
      {{- include "sds-bridge.config" $args | nindent 6 }}

where $args is a dict:
  values      sds-bridge's values: (index .Values "sds-bridge") in a parent
              chart, .Values here (image, workloadAPI, bridge)
  configMap   the name of the ConfigMap holding config.yaml
  sds         true: serve Envoy over SDS on /run/sds-bridge/sds.sock
              (volume sds-socket: mount it in Envoy at /run/sds-bridge)
  folders     credential folders, each a dict: name (the volume; mount it
              in the consumer), mountPath, layout, owner, certMode,
              keyMode, sizeLimit, onRotate (the bridge's on_rotate list)
  extraVolumeMounts  more mounts for the bridge (e.g. a pid file's dir)
  appVersion  the image tag when values.image.tag is empty (this chart
              passes its appVersion; a parent chart sets image.tag)

The bridge runs as the pod's uid (Envoy's, or the folder consumer's, which
then owns the key with no capability) and is restricted on its own.
*/}}
{{- define "sds-bridge.sidecar" -}}
{{- $v := .values -}}
{{- $probe := dict "httpGet" (dict "path" "/readyz" "port" "admin") -}}
- name: sds-bridge
  image: {{ include "sds-bridge.image" (dict "image" $v.image "defaultTag" (.appVersion | default "")) | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  args: ["run", "--config", "/etc/sds-bridge/config.yaml"]
  # A native sidecar: started first, running as long as the pod does.
  restartPolicy: Always
  ports:
    - name: admin
      containerPort: {{ $v.bridge.adminPort }}
  # Holds back every container after it until the SVID is held and the
  # folders are written.
  startupProbe:
    {{- toYaml (merge (dict) $probe $v.bridge.startupProbe) | nindent 4 }}
  # Counts for the pod's Ready condition (a sidecar's readiness does).
  readinessProbe:
    {{- toYaml (merge (dict) $probe $v.bridge.readinessProbe) | nindent 4 }}
  livenessProbe:
    {{- toYaml (merge (dict) (dict "httpGet" (dict "path" "/livez" "port" "admin")) $v.bridge.livenessProbe) | nindent 4 }}
  securityContext:
    runAsNonRoot: true
    {{- include "sds-bridge.containerSecurityContext" . | nindent 4 }}
    seccompProfile:
      type: RuntimeDefault
  resources:
    {{- toYaml $v.bridge.resources | nindent 4 }}
  volumeMounts:
    - name: spiffe-workload-api
      mountPath: /spiffe-workload-api
      readOnly: true
    {{- if .sds }}
    - name: sds-socket
      mountPath: /run/sds-bridge
    {{- end }}
    {{- range .folders }}
    - name: {{ .name }}
      mountPath: {{ .mountPath }}
    {{- end }}
    - name: sds-bridge-config
      mountPath: /etc/sds-bridge
      readOnly: true
    {{- with .extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}

{{- define "sds-bridge.sidecarVolumes" -}}
- name: spiffe-workload-api
  csi:
    driver: {{ .values.workloadAPI.csiDriver }}
    readOnly: true
{{- if .sds }}
# Only the bridge and Envoy mount it; the socket is 0600.
- name: sds-socket
  emptyDir:
    medium: Memory
    sizeLimit: 1Mi
{{- end }}
{{- range .folders }}
# In memory: the private key never touches the node's disk.
- name: {{ .name }}
  emptyDir:
    medium: Memory
    sizeLimit: {{ .sizeLimit | default "1Mi" }}
{{- end }}
- name: sds-bridge-config
  configMap:
    name: {{ .configMap }}
{{- end }}

{{/* The bridge's config.yaml (keys: configs/sds-bridge.example.yaml). */}}
{{- define "sds-bridge.config" -}}
{{- $v := .values -}}
workload_api:
  # The SPIFFE CSI driver mounts the SPIRE agent's socket directory.
  address: unix:///spiffe-workload-api/{{ $v.workloadAPI.socketFile }}
  first_update_timeout: {{ $v.bridge.firstUpdateTimeout }}
sds:
{{- if .sds }}
  enabled: true
  # On the emptyDir shared with Envoy only; Envoy runs as the bridge's uid.
  socket: /run/sds-bridge/sds.sock
  socket_mode: "0600"
{{- else }}
  enabled: false
{{- end }}
{{- with .folders }}
files:
{{- range . }}
  - dir: {{ .mountPath }}
    layout: {{ .layout }}
    cert_mode: {{ .certMode | quote }}
    key_mode: {{ .keyMode | quote }}
    {{- with .owner }}
    owner: {{ . | quote }}
    {{- end }}
    # An emptyDir is writable by all (tmpfs mode 1777); only this pod's
    # containers see it.
    allow_world_writable_dir: true
    {{- with .onRotate }}
    on_rotate:
      {{- toYaml . | nindent 6 }}
    {{- end }}
{{- end }}
{{- end }}
admin:
  # The kubelet probes over the pod IP, so not 127.0.0.1.
  listen: 0.0.0.0:{{ $v.bridge.adminPort }}
{{- end }}
