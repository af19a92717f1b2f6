package helmtest

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// A chart of a user's own, with sds-bridge as a dependency whose own
// workloads are off, that adds the bridge to its Deployment with the
// chart's named templates.
const (
	parentChart = `apiVersion: v2
name: shop
version: 1.0.0
dependencies:
  - name: sds-bridge
    version: 0.1.0
`
	parentValues = `sds-bridge:
  image:
    tag: "9.9.9"
  envoy:
    enabled: false
  postgres:
    enabled: false
  spireControllerManager:
    enabled: false
`
	parentDeployment = `{{- $bridge := dict "values" (index .Values "sds-bridge") "configMap" "shop-sds-bridge" "sds" true
  "folders" (list (dict "name" "shop-certs" "mountPath" "/certs" "layout" "spiffe" "certMode" "0644" "keyMode" "0600"
    "onRotate" (list (dict "signal" (dict "pid_file" "/run/shop/shop.pid")))))
  "extraVolumeMounts" (list (dict "name" "shop-run" "mountPath" "/run/shop" "readOnly" true)) -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: shop-sds-bridge
data:
  config.yaml: |
    {{- include "sds-bridge.config" $bridge | nindent 4 }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop
spec:
  selector: {matchLabels: {app: shop}}
  template:
    metadata: {labels: {app: shop}}
    spec:
      securityContext: {runAsUser: 10001, runAsGroup: 10001, runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}
      initContainers:
        {{- include "sds-bridge.sidecar" $bridge | nindent 8 }}
        - name: migrate
          image: example.net/shop-migrate:1
          securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: ["ALL"]}}
      containers:
        - name: envoy
          image: docker.io/envoyproxy/envoy:v1.36.2
          securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: ["ALL"]}}
          volumeMounts: [{name: sds-socket, mountPath: /run/sds-bridge}]
        - name: shop
          image: example.net/shop:1
          securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: ["ALL"]}}
          volumeMounts:
            - {name: shop-certs, mountPath: /certs, readOnly: true}
            - {name: shop-run, mountPath: /run/shop}
      volumes:
        {{- include "sds-bridge.sidecarVolumes" $bridge | nindent 8 }}
        - name: shop-run
          emptyDir: {medium: Memory}
`
)

// parent writes the user's chart, with a copy of deploy/helm/sds-bridge in
// its charts/ (what `helm dependency update` puts there).
func parent(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.CopyFS(filepath.Join(dir, "charts", "sds-bridge"), os.DirFS(chartDir)); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{
		"Chart.yaml":          parentChart,
		"values.yaml":         parentValues,
		"templates/shop.yaml": parentDeployment,
	} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestSidecarTemplateInAnotherChart: a chart that depends on sds-bridge
// (its workloads off) and includes sds-bridge.sidecar,
// sds-bridge.sidecarVolumes and sds-bridge.config gets the bridge first
// among its init containers, a native sidecar with the image from its
// sds-bridge values, every mount backed by a volume (the SDS socket shared
// with its Envoy, the folder with its app, its own extra mount), a config
// naming that folder, and a pod that passes "restricted"; the dependency
// renders nothing else, and its schema still checks the parent's values.
func TestSidecarTemplateInAnotherChart(t *testing.T) {
	dir := parent(t)
	objs := render(t, dir, Options{Release: "shop", Namespace: "shop"})
	var d *appsv1.Deployment
	var cm *corev1.ConfigMap
	for _, o := range objs {
		switch x := o.obj.(type) {
		case *appsv1.Deployment:
			d = x
		case *corev1.ConfigMap:
			cm = x
		}
	}
	if len(objs) != 2 || d == nil || cm == nil {
		t.Fatalf("rendered %d objects, want the parent's ConfigMap and Deployment only", len(objs))
	}
	spec := d.Spec.Template.Spec
	b := spec.InitContainers[0]
	if b.Name != "sds-bridge" || b.RestartPolicy == nil || *b.RestartPolicy != corev1.ContainerRestartPolicyAlways || spec.InitContainers[1].Name != "migrate" {
		t.Fatalf("init containers %s (restartPolicy %v), %s: want the bridge first as a native sidecar", b.Name, b.RestartPolicy, spec.InitContainers[1].Name)
	}
	if b.Image != "registry.example.com/sds-bridge:9.9.9" {
		t.Errorf("the bridge's image is %s, want the parent's sds-bridge.image", b.Image)
	}
	vols := map[string]bool{}
	for _, v := range spec.Volumes {
		vols[v.Name] = true
	}
	mountedBy := map[string][]string{}
	for _, c := range containers(&spec) {
		for _, m := range c.VolumeMounts {
			if !vols[m.Name] {
				t.Errorf("container %s mounts %s, which is no volume of the pod", c.Name, m.Name)
			}
			mountedBy[m.Name] = append(mountedBy[m.Name], c.Name)
		}
	}
	for vol, with := range map[string]string{"sds-socket": "envoy", "shop-certs": "shop", "shop-run": "shop", "spiffe-workload-api": "sds-bridge"} {
		if !slices.Contains(mountedBy[vol], "sds-bridge") || !slices.Contains(mountedBy[vol], with) {
			t.Errorf("volume %s is mounted by %v, want the bridge and %s", vol, mountedBy[vol], with)
		}
	}
	for _, bad := range restrictedViolations(t, workload{"Deployment/shop", d.Spec.Template.ObjectMeta, spec}) {
		t.Errorf("restricted: %s", bad)
	}
	for _, want := range []string{"- dir: /certs", "layout: spiffe", "socket: /run/sds-bridge/sds.sock", "pid_file: /run/shop/shop.pid"} {
		if !slices.ContainsFunc(splitLines(cm.Data["config.yaml"]), func(l string) bool { return l == want }) {
			t.Errorf("the bridge's config lacks %q:\n%s", want, cm.Data["config.yaml"])
		}
	}
	if _, err := Render(dir, Options{Release: "shop", Namespace: "shop", Set: []string{"sds-bridge.trustDomian=x"}}); err == nil {
		t.Errorf("a misspelt sds-bridge value in the parent chart rendered")
	}
}

func splitLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		out = append(out, strings.TrimSpace(l))
	}
	return out
}
