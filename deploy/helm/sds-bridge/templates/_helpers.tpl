{{/*
Labels every object carries; the selector is name + instance only (a
Deployment's selector cannot change later). Call with (dict "root" $ "name" "backend").
*/}}
{{- define "sds-bridge.labels" -}}
{{ include "sds-bridge.selectorLabels" . }}
app.kubernetes.io/part-of: sds-bridge
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "sds-bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end }}

{{/*
An image reference from (dict "image" {repository, tag, digest} "defaultTag" "x"):
repository:tag@digest, or repository@digest without a tag.
*/}}
{{- define "sds-bridge.image" -}}
{{- $tag := .image.tag | default .defaultTag | toString -}}
{{- $ref := .image.repository -}}
{{- if $tag }}{{ $ref = printf "%s:%s" $ref $tag }}{{ end -}}
{{- if .image.digest }}{{ $ref = printf "%s@%s" $ref .image.digest }}{{ end -}}
{{- $ref -}}
{{- end }}

{{/*
A workload's SPIFFE ID, as the ClusterSPIFFEIDs below give it:
(dict "root" $ "sa" "backend").
*/}}
{{- define "sds-bridge.spiffeID" -}}
spiffe://{{ .root.Values.trustDomain }}/ns/{{ .root.Release.Namespace }}/sa/{{ .sa }}
{{- end }}

{{/* The first DNS name of a service account: its SVID's subject CN. */}}
{{- define "sds-bridge.dnsName" -}}
{{ .sa }}.{{ .root.Release.Namespace }}.svc.{{ .root.Values.clusterDomain }}
{{- end }}

{{/*
The pod securityContext of every workload here: restricted, as uid/gid.
(dict "uid" 10001 "gid" 10001 "fsGroup" true)
*/}}
{{- define "sds-bridge.podSecurityContext" -}}
runAsUser: {{ .uid }}
runAsGroup: {{ .gid }}
{{- if .fsGroup }}
fsGroup: {{ .gid }}
{{- end }}
runAsNonRoot: true
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* A container securityContext: restricted, read-only root. */}}
{{- define "sds-bridge.containerSecurityContext" -}}
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop: ["ALL"]
{{- end }}
