// Package kustomizetest checks deploy/kubernetes as kustomize renders it:
// base/ and the demo/ overlay build with krusty, every object decodes
// strictly into k8s.io/api types, every pod template passes Pod Security
// Standards "restricted", labels and the image by name do what the README
// says. It is a module of its own so that kustomize and k8s.io stay out of
// the daemon's go.mod; `make unit` runs it.
package kustomizetest

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	psapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// bridgeImage is the name base/ gives every sds-bridge container.
const bridgeImage = "sds-bridge"

// dir is deploy/kubernetes, absolute (krusty resolves ../base from it).
func dir(t *testing.T, elem ...string) string {
	t.Helper()
	d, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(append([]string{d}, elem...)...)
}

// object is one rendered object, decoded strictly.
type object struct {
	kind, name string
	labels     map[string]string
	obj        runtime.Object
}

// workload is a pod template of a Deployment or StatefulSet.
type workload struct {
	owner string
	meta  metav1.ObjectMeta
	spec  corev1.PodSpec
}

var decoder = func() runtime.Decoder {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	// EnableStrict: unknown and duplicate fields are errors, as the API
	// server's fieldValidation=Strict makes them.
	return serializer.NewCodecFactory(s, serializer.EnableStrict).UniversalDeserializer()
}()

// render builds the kustomization in path and decodes every object.
func render(t *testing.T, path string) []object {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), path)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", path, err)
	}
	var out []object
	for _, r := range m.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatalf("%s: %v", r.CurId(), err)
		}
		obj, _, err := decoder.Decode(y, nil, nil)
		if err != nil {
			t.Errorf("%s %s: %v", r.GetKind(), r.GetName(), err)
			continue
		}
		out = append(out, object{kind: r.GetKind(), name: r.GetName(), labels: r.GetLabels(), obj: obj})
	}
	if len(out) == 0 {
		t.Fatalf("kustomize build %s: no objects", path)
	}
	return out
}

func workloads(t *testing.T, objs []object) []workload {
	t.Helper()
	var ws []workload
	for _, o := range objs {
		switch x := o.obj.(type) {
		case *appsv1.Deployment:
			ws = append(ws, workload{"Deployment/" + x.Name, x.Spec.Template.ObjectMeta, x.Spec.Template.Spec})
		case *appsv1.StatefulSet:
			ws = append(ws, workload{"StatefulSet/" + x.Name, x.Spec.Template.ObjectMeta, x.Spec.Template.Spec})
		case *appsv1.DaemonSet, *appsv1.ReplicaSet, *corev1.Pod:
			t.Errorf("%s %s: a pod-carrying kind this test does not collect; add it", o.kind, o.name)
		}
	}
	return ws
}

func containers(spec *corev1.PodSpec) []*corev1.Container {
	var cs []*corev1.Container
	for i := range spec.InitContainers {
		cs = append(cs, &spec.InitContainers[i])
	}
	for i := range spec.Containers {
		cs = append(cs, &spec.Containers[i])
	}
	return cs
}

func imageName(image string) string {
	name, _, _ := strings.Cut(image, "@")
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		name = name[:i]
	}
	return name
}

func restrictedViolations(t *testing.T, ev policy.Evaluator, w workload) []string {
	t.Helper()
	var bad []string
	lv := psapi.LevelVersion{Level: psapi.LevelRestricted, Version: psapi.LatestVersion()}
	for _, r := range ev.EvaluatePod(lv, &w.meta, &w.spec) {
		if !r.Allowed {
			bad = append(bad, r.ForbiddenReason+": "+r.ForbiddenDetail)
		}
	}
	return bad
}

func evaluator(t *testing.T) policy.Evaluator {
	t.Helper()
	ev, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// TestBaseAndDemoRenderAndDecodeStrictly: both kustomizations build, and
// every object they make is a k8s.io/api type with no unknown field.
func TestBaseAndDemoRenderAndDecodeStrictly(t *testing.T) {
	for _, k := range []string{"base", "demo"} {
		t.Run(k, func(t *testing.T) {
			objs := render(t, dir(t, k))
			kinds := map[string]int{}
			for _, o := range objs {
				kinds[o.kind]++
			}
			t.Logf("%d objects: %v", len(objs), kinds)
			if len(workloads(t, objs)) != 3 {
				t.Errorf("want 3 workloads (backend, frontend, postgres), got %v", kinds)
			}
		})
	}
}

// TestEveryPodTemplatePassesRestricted: every container of every pod
// template (the bridge sidecars, the `wait` init container, PostgreSQL,
// Envoy and the demo apps) passes Pod Security Standards "restricted" at the
// latest version, and the namespace enforces it.
func TestEveryPodTemplatePassesRestricted(t *testing.T) {
	ev := evaluator(t)
	for _, k := range []string{"base", "demo"} {
		objs := render(t, dir(t, k))
		for _, o := range objs {
			if ns, ok := o.obj.(*corev1.Namespace); ok && ns.Labels[psapi.EnforceLevelLabel] != string(psapi.LevelRestricted) {
				t.Errorf("%s: Namespace %s does not enforce restricted (label %s)", k, ns.Name, psapi.EnforceLevelLabel)
			}
		}
		for _, w := range workloads(t, objs) {
			t.Run(k+"/"+w.owner, func(t *testing.T) {
				for _, v := range restrictedViolations(t, ev, w) {
					t.Errorf("restricted: %s", v)
				}
				var names []string
				for _, c := range containers(&w.spec) {
					names = append(names, c.Name)
				}
				t.Logf("restricted: pass (%s)", strings.Join(names, ", "))
			})
		}
	}
}

// TestRestrictedCheckIsNotVacuous guards the test above: the same pod
// templates with one restricted field undone each fail, so a pass means
// the evaluator looked at them.
func TestRestrictedCheckIsNotVacuous(t *testing.T) {
	ev := evaluator(t)
	breaks := map[string]func(*corev1.Container){
		"allowPrivilegeEscalation unset": func(c *corev1.Container) { c.SecurityContext.AllowPrivilegeEscalation = nil },
		"capabilities not dropped":       func(c *corev1.Container) { c.SecurityContext.Capabilities = nil },
		"runs as root": func(c *corev1.Container) {
			root := int64(0)
			c.SecurityContext.RunAsUser = &root
		},
	}
	for _, w := range workloads(t, render(t, dir(t, "base"))) {
		for _, c := range containers(&w.spec) {
			for what, brk := range breaks {
				b := workload{owner: w.owner, meta: *w.meta.DeepCopy(), spec: *w.spec.DeepCopy()}
				bc := containers(&b.spec)[slices.IndexFunc(containers(&w.spec), func(x *corev1.Container) bool { return x == c })]
				if bc.SecurityContext == nil {
					bc.SecurityContext = &corev1.SecurityContext{}
				}
				brk(bc)
				if len(restrictedViolations(t, ev, b)) == 0 {
					t.Errorf("%s container %s with %s still passes restricted", w.owner, c.Name, what)
				}
			}
		}
		noSeccomp := workload{owner: w.owner, meta: w.meta, spec: *w.spec.DeepCopy()}
		noSeccomp.spec.SecurityContext.SeccompProfile = nil
		if len(restrictedViolations(t, ev, noSeccomp)) == 0 {
			t.Errorf("%s without the pod's seccompProfile still passes restricted", w.owner)
		}
	}
}

// TestBridgeContainersAreHardened: beyond restricted, the bridge (sidecar and
// `wait`) and PostgreSQL run with a read-only root filesystem, and the
// PostgreSQL-side bridge runs as PostgreSQL's uid, so owning the key needs no
// CAP_CHOWN.
func TestBridgeContainersAreHardened(t *testing.T) {
	for _, w := range workloads(t, render(t, dir(t, "base"))) {
		for _, c := range containers(&w.spec) {
			if c.Image != bridgeImage && !strings.Contains(c.Image, "postgres") && !strings.Contains(c.Image, "envoy") {
				continue
			}
			if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Errorf("%s container %s (%s): readOnlyRootFilesystem is not true", w.owner, c.Name, c.Image)
			}
			if sc := c.SecurityContext; sc != nil && sc.Capabilities != nil && len(sc.Capabilities.Add) > 0 {
				t.Errorf("%s container %s adds capabilities %v", w.owner, c.Name, sc.Capabilities.Add)
			}
		}
	}
}

// TestLabels: every object carries app.kubernetes.io/part-of and
// managed-by, the demo's also instance; every workload's selector is its
// app.kubernetes.io/name and only that, so adding labels never touches an
// immutable selector.
func TestLabels(t *testing.T) {
	for _, k := range []struct {
		dir  string
		want map[string]string
	}{
		{"base", map[string]string{"app.kubernetes.io/part-of": "sds-bridge-demo", "app.kubernetes.io/managed-by": "kustomize"}},
		{"demo", map[string]string{"app.kubernetes.io/part-of": "sds-bridge-demo", "app.kubernetes.io/managed-by": "kustomize", "app.kubernetes.io/instance": "demo"}},
	} {
		t.Run(k.dir, func(t *testing.T) {
			objs := render(t, dir(t, k.dir))
			for _, o := range objs {
				for l, v := range k.want {
					if o.labels[l] != v {
						t.Errorf("%s %s: label %s=%q, want %q", o.kind, o.name, l, o.labels[l], v)
					}
				}
			}
			for _, o := range objs {
				var sel map[string]string
				var tmpl map[string]string
				switch x := o.obj.(type) {
				case *appsv1.Deployment:
					sel, tmpl = x.Spec.Selector.MatchLabels, x.Spec.Template.Labels
				case *appsv1.StatefulSet:
					sel, tmpl = x.Spec.Selector.MatchLabels, x.Spec.Template.Labels
				case *corev1.Service:
					sel = x.Spec.Selector
				default:
					continue
				}
				if want := map[string]string{"app.kubernetes.io/name": o.name}; fmt.Sprint(sel) != fmt.Sprint(want) {
					t.Errorf("%s %s: selector %v, want %v", o.kind, o.name, sel, want)
				}
				for l, v := range k.want {
					if tmpl != nil && tmpl[l] != v {
						t.Errorf("%s %s: pod template label %s=%q, want %q", o.kind, o.name, l, tmpl[l], v)
					}
				}
			}
		})
	}
}

// bridgeContainers maps owner/container to image for every container whose
// image in base/ is sds-bridge.
func bridgeContainers(t *testing.T) map[string]bool {
	t.Helper()
	ids := map[string]bool{}
	for _, w := range workloads(t, render(t, dir(t, "base"))) {
		for _, c := range containers(&w.spec) {
			if c.Image == bridgeImage {
				ids[w.owner+"/"+c.Name] = true
			}
		}
	}
	return ids
}

// TestImageIsChosenByName: an overlay's `images: - name: sds-bridge` (what
// `kustomize edit set image sds-bridge=…` writes) changes every bridge
// container, the sidecars and `wait` alike, and no other container; the demo
// overlay's own entry does the same.
func TestImageIsChosenByName(t *testing.T) {
	bridges := bridgeContainers(t)
	if len(bridges) < 4 {
		t.Fatalf("found %d sds-bridge containers in base/, want the 3 sidecars and wait: %v", len(bridges), bridges)
	}
	overlay := t.TempDir()
	rel, err := filepath.Rel(overlay, dir(t, "base"))
	if err != nil {
		t.Fatal(err)
	}
	const want = "example.net/team/sds-bridge:v9.9.9-test"
	k := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - %s
images:
  - name: sds-bridge
    newName: example.net/team/sds-bridge
    newTag: v9.9.9-test
`, filepath.ToSlash(rel))
	if err := os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ dir, want string }{
		{overlay, want},
		{dir(t, "demo"), "registry.example.com/sds-bridge:0.1.0"},
	} {
		seen := 0
		for _, w := range workloads(t, render(t, tc.dir)) {
			for _, c := range containers(&w.spec) {
				id := w.owner + "/" + c.Name
				switch {
				case bridges[id]:
					seen++
					if c.Image != tc.want {
						t.Errorf("%s: %s has image %s, want %s", tc.dir, id, c.Image, tc.want)
					}
				case imageName(c.Image) == imageName(tc.want) || c.Image == bridgeImage:
					t.Errorf("%s: %s is not a bridge container but has image %s", tc.dir, id, c.Image)
				}
			}
		}
		if seen != len(bridges) {
			t.Errorf("%s: found %d of the %d bridge containers", tc.dir, seen, len(bridges))
		}
	}
}

// TestStrictDecodingRefusesUnknownFields guards the decoding above: a
// misspelt field in a pod template is an error, not silently dropped.
func TestStrictDecodingRefusesUnknownFields(t *testing.T) {
	doc := []byte(`apiVersion: apps/v1
kind: Deployment
metadata: {name: x}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers:
        - name: c
          image: sds-bridge
          securityContext: {readOnlyRootFileSystem: true}
`)
	if _, _, err := decoder.Decode(doc, nil, nil); err == nil || !strings.Contains(err.Error(), "readOnlyRootFileSystem") {
		t.Errorf("a misspelt securityContext field decoded with error %v", err)
	}
}
