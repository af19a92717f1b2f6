package helmtest

import (
	"bufio"
	"errors"
	"io"
	"maps"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	psapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	"sigs.k8s.io/yaml"
)

// chartDir is deploy/helm/sds-bridge.
const chartDir = "../sds-bridge"

// valueSet is one install the tests render: values files under testdata/
// and the release namespace.
type valueSet struct {
	name, namespace string
	files           []string
	// kinds is how many objects of each kind the render must hold.
	kinds map[string]int
}

var valueSets = []valueSet{
	{"default", "demo", nil,
		map[string]int{"ServiceAccount": 3, "ConfigMap": 6, "Service": 2, "Deployment": 2, "StatefulSet": 1, "ClusterSPIFFEID": 3}},
	{"other trust domain and namespace", "payments", []string{"testdata/other-trust-domain.yaml"},
		map[string]int{"ServiceAccount": 3, "ConfigMap": 6, "Service": 2, "Deployment": 2, "StatefulSet": 1, "ClusterSPIFFEID": 3}},
	{"folders only, no Envoy", "payments", []string{"testdata/folders-only.yaml"},
		map[string]int{"ServiceAccount": 1, "ConfigMap": 2, "Service": 1, "StatefulSet": 1, "ClusterSPIFFEID": 1}},
	{"two folders, postgres reload", "demo", []string{"testdata/two-folders-postgres-reload.yaml"},
		map[string]int{"ServiceAccount": 3, "ConfigMap": 6, "Service": 2, "Deployment": 2, "StatefulSet": 1, "ClusterSPIFFEID": 3}},
}

func (v valueSet) options() Options {
	return Options{Release: "sds-bridge", Namespace: v.namespace, ValuesFiles: v.files}
}

var decoder = func() runtime.Decoder {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	// Unknown and duplicate fields are errors, as the API server's
	// fieldValidation=Strict makes them.
	return serializer.NewCodecFactory(s, serializer.EnableStrict).UniversalDeserializer()
}()

// clusterSPIFFEID is spire-controller-manager's spire.spiffe.io/v1alpha1
// CRD, the fields this chart may set; anything else is refused.
type clusterSPIFFEID struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       struct {
		ClassName         string                `json:"className"`
		SPIFFEIDTemplate  string                `json:"spiffeIDTemplate"`
		NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector"`
		PodSelector       *metav1.LabelSelector `json:"podSelector"`
		DNSNameTemplates  []string              `json:"dnsNameTemplates"`
	} `json:"spec"`
}

// object is one rendered object, decoded strictly.
type object struct {
	kind, name string
	obj        any
}

// workload is a pod template of a Deployment or StatefulSet.
type workload struct {
	owner string
	meta  metav1.ObjectMeta
	spec  corev1.PodSpec
}

// render renders the chart for v and decodes every object strictly.
func render(t *testing.T, dir string, o Options) []object {
	t.Helper()
	r, err := Render(dir, o)
	if err != nil {
		t.Fatalf("render %s: %v", dir, err)
	}
	objs := decodeAll(t, r.Stream())
	if len(objs) == 0 {
		t.Fatalf("render %s: no objects", dir)
	}
	return objs
}

func decodeAll(t *testing.T, stream string) []object {
	t.Helper()
	var out []object
	rd := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(stream)))
	for {
		doc, err := rd.Read()
		if errors.Is(err, io.EOF) {
			return out
		} else if err != nil {
			t.Fatal(err)
		}
		var head struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(doc, &head); err != nil {
			t.Fatal(err)
		}
		if head.Kind == "" {
			continue // a document of comments only
		}
		var obj any
		if head.Kind == "ClusterSPIFFEID" {
			var c clusterSPIFFEID
			err, obj = yaml.UnmarshalStrict(doc, &c), &c
		} else {
			obj, _, err = decoder.Decode(doc, nil, nil)
		}
		if err != nil {
			t.Errorf("%s %s: %v", head.Kind, head.Metadata.Name, err)
			continue
		}
		out = append(out, object{kind: head.Kind, name: head.Metadata.Name, obj: obj})
	}
}

func workloads(objs []object) []workload {
	var ws []workload
	for _, o := range objs {
		switch x := o.obj.(type) {
		case *appsv1.Deployment:
			ws = append(ws, workload{"Deployment/" + x.Name, x.Spec.Template.ObjectMeta, x.Spec.Template.Spec})
		case *appsv1.StatefulSet:
			ws = append(ws, workload{"StatefulSet/" + x.Name, x.Spec.Template.ObjectMeta, x.Spec.Template.Spec})
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

func restrictedViolations(t *testing.T, w workload) []string {
	t.Helper()
	ev, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var bad []string
	lv := psapi.LevelVersion{Level: psapi.LevelRestricted, Version: psapi.LatestVersion()}
	for _, r := range ev.EvaluatePod(lv, &w.meta, &w.spec) {
		if !r.Allowed {
			bad = append(bad, r.ForbiddenReason+": "+r.ForbiddenDetail)
		}
	}
	return bad
}

// TestChartRendersAndDecodesStrictly: for the default values and each value
// set, Helm's SDK renders the chart (values checked against
// values.schema.json), every object decodes strictly into k8s.io/api types
// (or the ClusterSPIFFEID fields), in the release namespace, and the render
// holds the objects the value set asks for.
func TestChartRendersAndDecodesStrictly(t *testing.T) {
	for _, v := range valueSets {
		t.Run(v.name, func(t *testing.T) {
			r, err := Render(chartDir, v.options())
			if err != nil {
				t.Fatal(err)
			}
			objs := decodeAll(t, r.Stream())
			kinds := map[string]int{}
			for _, o := range objs {
				kinds[o.kind]++
				if m, ok := o.obj.(metav1.Object); ok && m.GetNamespace() != "" && m.GetNamespace() != v.namespace {
					t.Errorf("%s %s: namespace %s, want the release's %s", o.kind, o.name, m.GetNamespace(), v.namespace)
				}
			}
			if !maps.Equal(kinds, v.kinds) {
				t.Errorf("rendered %v, want %v", kinds, v.kinds)
			}
			if !strings.Contains(r.Notes, v.namespace) {
				t.Errorf("NOTES.txt does not name the namespace %s:\n%s", v.namespace, r.Notes)
			}
			t.Logf("%d objects: %v", len(objs), kinds)
		})
	}
}

// TestChartLintsClean: Helm's own linter (as `helm lint --strict` runs it,
// with each value set) reports no warning and no error.
func TestChartLintsClean(t *testing.T) {
	for _, v := range valueSets {
		t.Run(v.name, func(t *testing.T) {
			vals, err := Values(v.options())
			if err != nil {
				t.Fatal(err)
			}
			res := lint.RunAll(chartDir, vals, v.namespace)
			for _, m := range res.Messages {
				if m.Severity > support.InfoSev {
					t.Errorf("lint: %s", m)
				} else {
					t.Logf("lint: %s", m)
				}
			}
		})
	}
}

// TestEveryPodTemplatePassesRestricted: every container of every pod
// template of every value set (the bridges, `wait`, Envoy, PostgreSQL, the
// demo apps) passes Pod Security Standards "restricted", latest version,
// with no exception; and, so that a pass means something, each pod with
// its seccomp profile or one container's dropped capabilities undone fails.
func TestEveryPodTemplatePassesRestricted(t *testing.T) {
	for _, v := range valueSets {
		for _, w := range workloads(render(t, chartDir, v.options())) {
			t.Run(v.name+"/"+w.owner, func(t *testing.T) {
				for _, bad := range restrictedViolations(t, w) {
					t.Errorf("restricted: %s", bad)
				}
				broken := workload{w.owner, w.meta, *w.spec.DeepCopy()}
				broken.spec.SecurityContext.SeccompProfile = nil
				for _, c := range containers(&broken.spec) {
					c.SecurityContext.SeccompProfile = nil
				}
				if len(restrictedViolations(t, broken)) == 0 {
					t.Errorf("without any seccomp profile the pod still passes restricted")
				}
				for i := range containers(&w.spec) {
					broken := workload{w.owner, w.meta, *w.spec.DeepCopy()}
					containers(&broken.spec)[i].SecurityContext.Capabilities = nil
					if len(restrictedViolations(t, broken)) == 0 {
						t.Errorf("container %s with capabilities not dropped still passes restricted", containers(&w.spec)[i].Name)
					}
				}
			})
		}
	}
}

// TestSchemaRefusesMisspeltValues: values.schema.json makes a misspelt key
// (at the top and nested in a folder) or a mode given as a number an error
// at install, naming the key, while the correct spelling renders.
func TestSchemaRefusesMisspeltValues(t *testing.T) {
	for _, tc := range []struct{ set, want string }{
		{"trustDomian=example.com", "trustDomian"},
		{"spireControllerManager.classname=x", "classname"},
		{"postgres.folders[0].keymode=0600", "keymode"},
		{"postgres.folders[0].keyMode=600", "keyMode"},
		{"postgres.folders[0].reload=sighup", "reload"},
		{"envoy.image.digest=latest", "digest"},
	} {
		_, err := Render(chartDir, Options{Release: "sds-bridge", Namespace: "demo", Set: []string{tc.set}})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("--set %s: error %v, want one naming %s", tc.set, err, tc.want)
		}
	}
	if _, err := Render(chartDir, Options{Release: "sds-bridge", Namespace: "demo", Set: []string{"trustDomain=example.com"}}); err != nil {
		t.Errorf("--set trustDomain=example.com (spelt right): %v", err)
	}
}

// envoyIDs returns the SPIFFE IDs in each Envoy bootstrap of a render, by
// ConfigMap name.
func envoyIDs(t *testing.T, objs []object) map[string][]string {
	t.Helper()
	ids := map[string][]string{}
	for _, o := range objs {
		cm, ok := o.obj.(*corev1.ConfigMap)
		if !ok || cm.Data["envoy.yaml"] == "" {
			continue
		}
		var boot map[string]any
		if err := yaml.Unmarshal([]byte(cm.Data["envoy.yaml"]), &boot); err != nil {
			t.Fatalf("ConfigMap %s: envoy.yaml: %v", cm.Name, err)
		}
		for _, l := range strings.Split(cm.Data["envoy.yaml"], "\n") {
			if _, id, ok := strings.Cut(l, "exact: "); ok {
				ids[cm.Name] = append(ids[cm.Name], strings.TrimSpace(id))
			}
		}
	}
	return ids
}

// TestAnotherTrustDomainIsOneValue: trustDomain alone (with another release
// namespace) makes both Envoy bootstraps name the new domain's IDs for that
// namespace, and the registrations give exactly those IDs; nothing of the
// default domain or namespace is left.
func TestAnotherTrustDomainIsOneValue(t *testing.T) {
	objs := render(t, chartDir, Options{Release: "sds-bridge", Namespace: "payments", Set: []string{"trustDomain=prod.example.com"}})
	want := map[string][]string{
		"backend-envoy":  {"spiffe://prod.example.com/ns/payments/sa/frontend"},
		"frontend-envoy": {"spiffe://prod.example.com/ns/payments/sa/backend"},
	}
	if got := envoyIDs(t, objs); !maps.EqualFunc(got, want, slices.Equal) {
		t.Errorf("Envoy bootstraps name %v, want %v", got, want)
	}
	for _, o := range objs {
		c, ok := o.obj.(*clusterSPIFFEID)
		if !ok {
			continue
		}
		if c.Spec.SPIFFEIDTemplate != "spiffe://prod.example.com/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}" ||
			c.Spec.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "payments" {
			t.Errorf("ClusterSPIFFEID %s: template %q in namespace %v", c.Metadata.Name, c.Spec.SPIFFEIDTemplate, c.Spec.NamespaceSelector.MatchLabels)
		}
	}
	r, err := Render(chartDir, Options{Release: "sds-bridge", Namespace: "payments", Set: []string{"trustDomain=prod.example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	if s := r.Stream(); strings.Contains(s, "example.org") || strings.Contains(s, "ns/demo") || strings.Contains(s, ".demo.svc") {
		t.Errorf("the render still names the default trust domain or namespace")
	}
}

// TestRegistrationPerWorkloadWithClassName: each workload has its own
// ClusterSPIFFEID whose podSelector is that workload's selector and whose
// className is spireControllerManager.className (spire-spire by default,
// the SPIRE Helm charts' class).
func TestRegistrationPerWorkloadWithClassName(t *testing.T) {
	for _, class := range []string{"", "team-a"} {
		o := Options{Release: "sds-bridge", Namespace: "demo"}
		want := "spire-spire"
		if class != "" {
			o.Set, want = []string{"spireControllerManager.className=" + class}, class
		}
		objs := render(t, chartDir, o)
		var regs []*clusterSPIFFEID
		for _, x := range objs {
			if c, ok := x.obj.(*clusterSPIFFEID); ok {
				regs = append(regs, c)
			}
		}
		for _, w := range workloads(objs) {
			n := 0
			for _, c := range regs {
				if c.Spec.ClassName != want {
					t.Errorf("ClusterSPIFFEID %s: className %q, want %q", c.Metadata.Name, c.Spec.ClassName, want)
				}
				sel, err := metav1.LabelSelectorAsSelector(c.Spec.PodSelector)
				if err != nil {
					t.Fatal(err)
				}
				if sel.Matches(labels.Set(w.meta.Labels)) {
					n++
				}
			}
			if n != 1 {
				t.Errorf("%s: selected by %d ClusterSPIFFEIDs, want exactly 1", w.owner, n)
			}
		}
	}
}
