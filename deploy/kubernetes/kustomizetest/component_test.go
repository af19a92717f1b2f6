package kustomizetest

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// sampleApp is a user's own workload, as the component's README describes
// it: labelled for the sidecar, with its own init container first in the
// file, Envoy on the SDS socket, a consumer of the credential folder, and
// the bridge's config as volume sds-bridge-config. A second Deployment is
// not labelled and must stay as it is.
const sampleApp = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop
  labels:
    sds-bridge.example.org/sidecar: "true"
spec:
  selector: {matchLabels: {app.kubernetes.io/name: shop}}
  template:
    metadata: {labels: {app.kubernetes.io/name: shop}}
    spec:
      securityContext:
        runAsUser: 10001
        runAsNonRoot: true
        seccompProfile: {type: RuntimeDefault}
      initContainers:
        - name: migrate
          image: example.net/shop-migrate:1
          securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: ["ALL"]}}
      containers:
        - name: envoy
          image: docker.io/envoyproxy/envoy:v1.36.2
          securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: ["ALL"]}}
          volumeMounts:
            - {name: sds-socket, mountPath: /run/sds-bridge}
        - name: shop
          image: example.net/shop:1
          securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: ["ALL"]}}
          volumeMounts:
            - {name: spiffe-certs, mountPath: /spiffe-certs, readOnly: true}
      volumes:
        - name: sds-bridge-config
          configMap: {name: shop-sds-bridge}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: untouched
spec:
  selector: {matchLabels: {app.kubernetes.io/name: untouched}}
  template:
    metadata: {labels: {app.kubernetes.io/name: untouched}}
    spec:
      containers:
        - name: c
          image: example.net/untouched:1
`

// renderSample builds sampleApp with components/sidecar in a temporary
// kustomization, as a user's overlay would.
func renderSample(t *testing.T) map[string]*appsv1.Deployment {
	t.Helper()
	k := t.TempDir()
	rel, err := filepath.Rel(k, dir(t, "components", "sidecar"))
	if err != nil {
		t.Fatal(err)
	}
	kust := fmt.Sprintf("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [app.yaml]\ncomponents: [%s]\n", filepath.ToSlash(rel))
	for name, data := range map[string]string{"kustomization.yaml": kust, "app.yaml": sampleApp} {
		if err := os.WriteFile(filepath.Join(k, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := map[string]*appsv1.Deployment{}
	for _, o := range render(t, k) {
		if d, ok := o.obj.(*appsv1.Deployment); ok {
			out[d.Name] = d
		}
	}
	return out
}

// TestSidecarComponentAddsTheBridgeToALabelledWorkload: components/sidecar
// puts the bridge first among the labelled workload's init containers as a
// native sidecar (restartPolicy Always, startupProbe on /readyz), adds the
// agent's CSI volume, the SDS socket volume the user's Envoy mounts and the
// credential folder the user's app mounts, keeps the workload's own init
// container, volumes and config, passes Pod Security "restricted", and
// leaves an unlabelled workload alone.
func TestSidecarComponentAddsTheBridgeToALabelledWorkload(t *testing.T) {
	ds := renderSample(t)
	shop, untouched := ds["shop"], ds["untouched"]
	if shop == nil || untouched == nil {
		t.Fatalf("rendered %d Deployments, want shop and untouched", len(ds))
	}
	spec := shop.Spec.Template.Spec
	var names []string
	for _, c := range spec.InitContainers {
		names = append(names, c.Name)
	}
	if !slices.Equal(names, []string{"sds-bridge", "migrate"}) {
		t.Fatalf("init containers %v, want [sds-bridge migrate]: the bridge first, the workload's own kept", names)
	}
	b := spec.InitContainers[0]
	if b.RestartPolicy == nil || *b.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("the bridge is not a native sidecar (restartPolicy %v)", b.RestartPolicy)
	}
	if b.Image != bridgeImage || b.StartupProbe == nil || b.StartupProbe.HTTPGet == nil || b.StartupProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("the bridge: image %q, startupProbe %+v; want image %s and a startupProbe on /readyz", b.Image, b.StartupProbe, bridgeImage)
	}
	vols := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		vols[v.Name] = v
	}
	if v := vols["spiffe-workload-api"]; v.CSI == nil || v.CSI.Driver != "csi.spiffe.io" {
		t.Errorf("volume spiffe-workload-api is %+v, want the SPIFFE CSI driver", v)
	}
	for _, name := range []string{"sds-socket", "spiffe-certs"} {
		if v := vols[name]; v.EmptyDir == nil || v.EmptyDir.Medium != corev1.StorageMediumMemory {
			t.Errorf("volume %s is %+v, want an in-memory emptyDir", name, v)
		}
	}
	if v := vols["sds-bridge-config"]; v.ConfigMap == nil || v.ConfigMap.Name != "shop-sds-bridge" {
		t.Errorf("volume sds-bridge-config is %+v, want the workload's ConfigMap shop-sds-bridge", v)
	}
	// Every mount of every container is a volume of the pod: the bridge
	// and Envoy share the socket, the bridge and the app the folder.
	shared := map[string][]string{}
	for _, c := range containers(&spec) {
		for _, m := range c.VolumeMounts {
			if _, ok := vols[m.Name]; !ok {
				t.Errorf("container %s mounts %s, which is no volume of the pod", c.Name, m.Name)
			}
			shared[m.Name+" "+m.MountPath] = append(shared[m.Name+" "+m.MountPath], c.Name)
		}
	}
	for _, want := range []struct{ mount, with string }{{"sds-socket /run/sds-bridge", "envoy"}, {"spiffe-certs /spiffe-certs", "shop"}} {
		if got := shared[want.mount]; !slices.Contains(got, "sds-bridge") || !slices.Contains(got, want.with) {
			t.Errorf("%s is mounted by %v, want the bridge and %s", want.mount, got, want.with)
		}
	}
	w := workload{owner: "Deployment/shop", meta: shop.Spec.Template.ObjectMeta, spec: spec}
	for _, v := range restrictedViolations(t, evaluator(t), w) {
		t.Errorf("restricted: %s", v)
	}
	us := untouched.Spec.Template.Spec
	if len(us.InitContainers) != 0 || len(us.Volumes) != 0 || len(us.Containers) != 1 {
		t.Errorf("the unlabelled Deployment changed: %d init containers, %d volumes, %d containers", len(us.InitContainers), len(us.Volumes), len(us.Containers))
	}
}
