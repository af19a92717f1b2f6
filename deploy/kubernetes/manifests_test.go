// Package kubernetes_test checks the manifests in deploy/kubernetes without
// a cluster, file by file as written (kustomizetest, a module of its own,
// checks them as kustomize renders them): every document decodes strictly, and what the pieces say about
// each other (volumes, ConfigMap keys, socket paths, ports, uids, SPIFFE IDs)
// agrees with the bridge config and the Envoy bootstrap they carry.
package kubernetes_test

import (
	"bytes"
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/prototext"

	"github.com/sds-bridge/sds-bridge/internal/config"
	"github.com/sds-bridge/sds-bridge/internal/envoyboot"
)

var update = flag.Bool("update", false, "regenerate the Envoy ConfigMaps from configs/envoy")

const (
	// bridgeImage is the name every sds-bridge container uses in base/;
	// overlays choose the real image by this name (kustomize images).
	bridgeImage = "sds-bridge"
	ns          = "demo"
	trustDomain = "spiffe://example.org"
)

// generated lists the ConfigMaps made from configs/envoy: the bootstraps
// are copied, never edited here, so they stay the validated ones.
var generated = []struct{ file, name, source string }{
	{"base/backend-envoy-configmap.yaml", "backend-envoy", "../../configs/envoy/sidecar-inbound.yaml"},
	{"base/frontend-envoy-configmap.yaml", "frontend-envoy", "../../configs/envoy/sidecar-outbound.yaml"},
}

func TestEnvoyConfigMapsAreGenerated(t *testing.T) {
	for _, g := range generated {
		t.Run(g.file, func(t *testing.T) {
			src, err := os.ReadFile(g.source)
			if err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			fmt.Fprintf(&b, "# Generated from %s by\n", strings.TrimPrefix(g.source, "../../"))
			b.WriteString("#   go test ./deploy/kubernetes -run TestEnvoyConfigMapsAreGenerated -update\n")
			b.WriteString("# Edit the source, not this file.\n")
			fmt.Fprintf(&b, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\n  namespace: %s\ndata:\n  envoy.yaml: |\n", g.name, ns)
			for _, l := range strings.SplitAfter(strings.TrimRight(string(src), "\n")+"\n", "\n") {
				if strings.TrimSpace(l) == "" {
					b.WriteString(l)
					continue
				}
				b.WriteString("    " + l)
			}
			want := []byte(b.String())
			if *update {
				if err := os.WriteFile(g.file, want, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := os.ReadFile(g.file)
			if err != nil {
				t.Fatalf("%v (run go test ./deploy/kubernetes -run TestEnvoyConfigMapsAreGenerated -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s is not %s as generated; run go test ./deploy/kubernetes -run TestEnvoyConfigMapsAreGenerated -update", g.file, g.source)
			}
			// The block scalar must give back the file byte for byte.
			var cm configMap
			if err := strictDecode(want, &cm); err != nil {
				t.Fatal(err)
			}
			if cm.Data["envoy.yaml"] != strings.TrimRight(string(src), "\n")+"\n" {
				t.Errorf("the ConfigMap's envoy.yaml differs from %s", g.source)
			}
		})
	}
}

// manifest is one YAML document, decoded strictly into the type its kind
// names. It uses yaml.v3's older Unmarshaler form on purpose: its callback
// decodes with the file's own decoder, which keeps KnownFields and the
// file's line numbers (Node.Decode would drop both).
type manifest struct {
	head  typeMeta
	empty bool
	obj   any
	err   error // the strict decode's error, reported with the document
}

func (m *manifest) UnmarshalYAML(unmarshal func(any) error) error {
	var raw map[string]any
	if err := unmarshal(&raw); err != nil {
		return err
	}
	if len(raw) == 0 {
		m.empty = true
		return nil
	}
	m.head.APIVersion, _ = raw["apiVersion"].(string)
	m.head.Kind, _ = raw["kind"].(string)
	if md, ok := raw["metadata"].(map[string]any); ok {
		m.head.Metadata.Name, _ = md["name"].(string)
		m.head.Metadata.Namespace, _ = md["namespace"].(string)
	}
	switch kv := m.head.APIVersion + " " + m.head.Kind; kv {
	case "v1 Namespace":
		m.obj = &namespace{}
	case "v1 ServiceAccount":
		m.obj = &serviceAccount{}
	case "v1 ConfigMap":
		m.obj = &configMap{}
	case "v1 Service":
		m.obj = &service{}
	case "apps/v1 Deployment":
		m.obj = &deployment{}
	case "apps/v1 StatefulSet":
		m.obj = &statefulSet{}
	case "spire.spiffe.io/v1alpha1 ClusterSPIFFEID":
		m.obj = &clusterSPIFFEID{}
	default:
		m.err = fmt.Errorf("%q is not modelled in types_test.go; add it so it is checked", kv)
		return nil
	}
	m.err = unmarshal(m.obj)
	return nil
}

// document is one manifest of one file.
type document struct {
	where string // file#index
	manifest
}

// decodeDocuments decodes every document of data strictly; where names
// them (file#index).
func decodeDocuments(where string, data []byte) ([]document, error) {
	var docs []document
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	for i := 0; ; i++ {
		var m manifest
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return docs, nil
		} else if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", where, i, err)
		}
		if !m.empty {
			docs = append(docs, document{where: fmt.Sprintf("%s#%d", where, i), manifest: m})
		}
	}
}

// rendered is what kustomize makes of a kustomization here, by its
// directory: the objects a cluster gets. The workloads of base/ take their
// bridge sidecar from components/sidecar, so the pod checks below read the
// render, not the files as written. kustomize stays in kustomizetest (a
// module of its own), run as the e2e suite runs it.
var rendered = sync.OnceValues(func() (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, dir := range []string{"base", "spire-controller-manager"} {
		cmd := exec.Command("go", "run", "./cmd/render", filepath.Join("..", dir))
		cmd.Dir = "kustomizetest"
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		y, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("kustomize build %s: %w\n%s", dir, err, stderr.String())
		}
		out[dir] = y
	}
	return out, nil
})

// renderedDocuments is every object of the rendered base and registration.
func renderedDocuments(t *testing.T) []document {
	t.Helper()
	r, err := rendered()
	if err != nil {
		t.Fatal(err)
	}
	var docs []document
	for _, dir := range []string{"base", "spire-controller-manager"} {
		d, err := decodeDocuments("kustomize build "+dir, r[dir])
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, d...)
	}
	return docs
}

// loadDocuments is every document of every file here, as written.
func loadDocuments(t *testing.T) []document {
	t.Helper()
	var docs []document
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		// kustomizetest is a module of its own; kustomization.yaml is
		// kustomize's, not an object (kustomizetest renders them).
		if d.IsDir() && p == "kustomizetest" {
			return filepath.SkipDir
		}
		if d.IsDir() || d.Name() == "kustomization.yaml" || (filepath.Ext(p) != ".yaml" && filepath.Ext(p) != ".yml") {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		ds, err := decodeDocuments(p, data)
		docs = append(docs, ds...)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) == 0 {
		t.Fatal("deploy/kubernetes holds no manifest")
	}
	return docs
}

func strictDecode(data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	return dec.Decode(v)
}

// objects is every manifest, decoded by kind.
type objects struct {
	configMaps      map[string]*configMap
	serviceAccounts map[string]bool
	services        []*service
	namespaces      []string
	pods            []*pod // Deployments' and StatefulSets' pod templates
	spiffeIDs       []*clusterSPIFFEID
}

type pod struct {
	owner  string // Deployment/backend
	labels map[string]string
	spec   podSpec
	claims []string // StatefulSet volumeClaimTemplates
}

// load is every object of the rendered base and registration, checked and
// sorted by kind.
func load(t *testing.T) *objects {
	t.Helper()
	o := &objects{configMaps: map[string]*configMap{}, serviceAccounts: map[string]bool{}}
	seen := map[string]string{}
	for _, d := range renderedDocuments(t) {
		h := d.head
		if h.APIVersion == "" || h.Kind == "" || h.Metadata.Name == "" {
			t.Errorf("%s: apiVersion, kind and metadata.name are required (got %q, %q, %q)", d.where, h.APIVersion, h.Kind, h.Metadata.Name)
			continue
		}
		if d.err != nil {
			t.Errorf("%s: %s %s: %v", d.where, h.Kind, h.Metadata.Name, d.err)
			continue
		}
		id := h.Kind + "/" + h.Metadata.Namespace + "/" + h.Metadata.Name
		if prev, dup := seen[id]; dup {
			t.Errorf("%s: %s is already defined in %s", d.where, id, prev)
		}
		seen[id] = d.where
		clusterScoped := h.Kind == "Namespace" || h.Kind == "ClusterSPIFFEID"
		if !clusterScoped && h.Metadata.Namespace != ns {
			t.Errorf("%s: %s %s: metadata.namespace is %q, want %q", d.where, h.Kind, h.Metadata.Name, h.Metadata.Namespace, ns)
		}
		switch x := d.obj.(type) {
		case *namespace:
			o.namespaces = append(o.namespaces, h.Metadata.Name)
		case *serviceAccount:
			o.serviceAccounts[h.Metadata.Name] = true
		case *configMap:
			o.configMaps[h.Metadata.Name] = x
		case *service:
			o.services = append(o.services, x)
		case *deployment:
			o.pods = append(o.pods, &pod{owner: "Deployment/" + h.Metadata.Name, labels: x.Spec.Template.Metadata.Labels, spec: x.Spec.Template.Spec})
			checkSelector(t, d.where, x.Spec.Selector, x.Spec.Template.Metadata.Labels)
		case *statefulSet:
			p := &pod{owner: "StatefulSet/" + h.Metadata.Name, labels: x.Spec.Template.Metadata.Labels, spec: x.Spec.Template.Spec}
			for _, c := range x.Spec.VolumeClaimTemplates {
				p.claims = append(p.claims, c.Metadata.Name)
			}
			o.pods = append(o.pods, p)
			checkSelector(t, d.where, x.Spec.Selector, x.Spec.Template.Metadata.Labels)
			if x.Spec.ServiceName == "" {
				t.Errorf("%s: spec.serviceName is required", d.where)
			}
		case *clusterSPIFFEID:
			o.spiffeIDs = append(o.spiffeIDs, x)
		}
	}
	return o
}

func checkSelector(t *testing.T, where string, sel labelSelector, labels map[string]string) {
	if len(sel.MatchLabels) == 0 {
		t.Errorf("%s: spec.selector.matchLabels is empty", where)
	}
	for k, v := range sel.MatchLabels {
		if labels[k] != v {
			t.Errorf("%s: selector %s=%s does not match the pod template's labels", where, k, v)
		}
	}
}

// TestManifestsDecodeStrictly: every document of every file here (the
// component's patch included) and every object kustomize renders from them
// decodes strictly into the types in types_test.go.
func TestManifestsDecodeStrictly(t *testing.T) {
	for _, d := range loadDocuments(t) {
		if d.err != nil {
			t.Errorf("%s: %s %s: %v", d.where, d.head.Kind, d.head.Metadata.Name, d.err)
		}
	}
	o := load(t)
	if !slices.Contains(o.namespaces, ns) {
		t.Errorf("no Namespace %q", ns)
	}
	if len(o.pods) < 2 {
		t.Errorf("found %d workloads, want the backend Deployment and the PostgreSQL StatefulSet", len(o.pods))
	}
}

// TestPodReferences: names used inside a pod exist.
func TestPodReferences(t *testing.T) {
	o := load(t)
	for _, p := range o.pods {
		t.Run(p.owner, func(t *testing.T) {
			if p.spec.ServiceAccountName == "" || !o.serviceAccounts[p.spec.ServiceAccountName] {
				t.Errorf("serviceAccountName %q has no ServiceAccount", p.spec.ServiceAccountName)
			}
			vols := map[string]volume{}
			for _, v := range p.spec.Volumes {
				vols[v.Name] = v
				if cmv := v.ConfigMap; cmv != nil {
					cm, ok := o.configMaps[cmv.Name]
					if !ok {
						t.Errorf("volume %s: no ConfigMap %q", v.Name, cmv.Name)
						continue
					}
					for _, it := range cmv.Items {
						if _, ok := cm.Data[it.Key]; !ok {
							t.Errorf("volume %s: ConfigMap %s has no key %q", v.Name, cmv.Name, it.Key)
						}
					}
				}
				if v.CSI != nil && (v.CSI.Driver != "csi.spiffe.io" || !v.CSI.ReadOnly) {
					t.Errorf("volume %s: the Workload API comes from the SPIFFE CSI driver: driver csi.spiffe.io, readOnly true", v.Name)
				}
			}
			for _, c := range allContainers(p) {
				for _, m := range c.VolumeMounts {
					if _, ok := vols[m.Name]; !ok && !slices.Contains(p.claims, m.Name) {
						t.Errorf("container %s mounts %q, which is not a volume of the pod", c.Name, m.Name)
					}
				}
				for _, e := range c.Env {
					if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
						t.Errorf("container %s: env %s uses a Secret; none is shipped", c.Name, e.Name)
					}
				}
				for _, pr := range []*probe{c.StartupProbe, c.ReadinessProbe, c.LivenessProbe} {
					if port, ok := probePort(pr); ok && containerPort(c, port) == 0 {
						t.Errorf("container %s: a probe uses port %v, which the container does not declare", c.Name, port)
					}
				}
			}
		})
	}
	for _, s := range o.services {
		var target *pod
		for _, p := range o.pods {
			if matches(s.Spec.Selector, p.labels) {
				target = p
			}
		}
		if target == nil {
			t.Errorf("Service %s selects no pod", s.Metadata.Name)
			continue
		}
		for _, sp := range s.Spec.Ports {
			found := false
			for _, c := range target.spec.Containers {
				if containerPort(c, sp.TargetPort) != 0 {
					found = true
				}
			}
			if !found {
				t.Errorf("Service %s port %s: targetPort %v is no container port of %s", s.Metadata.Name, sp.Name, sp.TargetPort, target.owner)
			}
		}
	}
}

func allContainers(p *pod) []container {
	return append(slices.Clone(p.spec.InitContainers), p.spec.Containers...)
}

func matches(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func probePort(p *probe) (intOrString, bool) {
	switch {
	case p == nil:
		return intOrString{}, false
	case p.HTTPGet != nil:
		return p.HTTPGet.Port, true
	case p.TCPSocket != nil:
		return p.TCPSocket.Port, true
	}
	return intOrString{}, false
}

// containerPort resolves a port number or name against c's ports; 0 if c
// does not declare it.
func containerPort(c container, port intOrString) int32 {
	for _, p := range c.Ports {
		if (port.String != "" && p.Name == port.String) || (port.String == "" && p.ContainerPort == port.Int) {
			return p.ContainerPort
		}
	}
	return 0
}

// mountOf returns the mount of c that holds file, by longest prefix.
func mountOf(c container, file string) (volumeMount, bool) {
	var best volumeMount
	found := false
	for _, m := range c.VolumeMounts {
		rel, err := filepath.Rel(m.MountPath, file)
		if err == nil && !strings.HasPrefix(rel, "..") && len(m.MountPath) > len(best.MountPath) {
			best, found = m, true
		}
	}
	return best, found
}

func (o *objects) volume(p *pod, name string) *volume {
	for i := range p.spec.Volumes {
		if p.spec.Volumes[i].Name == name {
			return &p.spec.Volumes[i]
		}
	}
	return nil
}

// fileFromConfigMap returns the ConfigMap content that c sees at file.
func (o *objects) fileFromConfigMap(t *testing.T, p *pod, c container, file string) string {
	t.Helper()
	m, ok := mountOf(c, file)
	if !ok {
		t.Fatalf("container %s: nothing is mounted at %s", c.Name, file)
	}
	v := o.volume(p, m.Name)
	if v == nil || v.ConfigMap == nil {
		t.Fatalf("container %s: %s is not on a ConfigMap volume", c.Name, file)
	}
	rel, _ := filepath.Rel(m.MountPath, file)
	key := rel
	for _, it := range v.ConfigMap.Items {
		if it.Path == rel {
			key = it.Key
		}
	}
	cm, ok := o.configMaps[v.ConfigMap.Name]
	if !ok {
		t.Fatalf("container %s: no ConfigMap %s for %s", c.Name, v.ConfigMap.Name, file)
	}
	data, ok := cm.Data[key]
	if !ok {
		t.Fatalf("container %s: ConfigMap %s has no key %q for %s", c.Name, v.ConfigMap.Name, key, file)
	}
	return data
}

// flagValue returns the value of --name in args ("--name v" or "--name=v").
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1], true
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v, true
		}
	}
	return "", false
}

func uidOf(p *pod, c container) int64 {
	if c.SecurityContext != nil && c.SecurityContext.RunAsUser != nil {
		return *c.SecurityContext.RunAsUser
	}
	if p.spec.SecurityContext != nil && p.spec.SecurityContext.RunAsUser != nil {
		return *p.spec.SecurityContext.RunAsUser
	}
	return -1
}

func isBridge(c container) bool   { return c.Image == bridgeImage }
func isEnvoy(c container) bool    { return strings.Contains(c.Image, "envoyproxy/envoy") }
func isPostgres(c container) bool { return strings.Contains(c.Image, "/postgres:") }

// TestBridgeSidecars: each `sds-bridge run` is a native sidecar whose config
// (from its ConfigMap) loads, and whose paths, ports and uids agree with
// the containers it serves.
func TestBridgeSidecars(t *testing.T) {
	o := load(t)
	bridges := 0
	for _, p := range o.pods {
		t.Run(p.owner, func(t *testing.T) {
			for i, c := range p.spec.InitContainers {
				if !isBridge(c) || len(c.Args) == 0 || c.Args[0] != "run" {
					continue
				}
				bridges++
				if c.RestartPolicy != "Always" {
					t.Errorf("%s: a native sidecar needs restartPolicy: Always", c.Name)
				}
				if i != 0 {
					t.Errorf("%s: the bridge should be the first init container, so everything after it finds it running", c.Name)
				}
				file, ok := flagValue(c.Args, "--config")
				if !ok {
					t.Fatalf("%s: run without --config", c.Name)
				}
				cfg := loadConfig(t, o.fileFromConfigMap(t, p, c, file))
				checkWorkloadAPI(t, o, p, c, cfg)
				checkAdmin(t, c, cfg)
				if cfg.SDS.On() {
					checkSDS(t, o, p, c, cfg)
				}
				for _, f := range cfg.Files {
					checkFolder(t, o, p, c, f)
				}
			}
		})
	}
	if bridges < 2 {
		t.Errorf("found %d sds-bridge sidecars; want at least the backend's and PostgreSQL's", bridges)
	}
}

// TestFolderConsumerStartsOnTheWrittenFolderAndNeitherWaitsForTheOther:
// in a pod where a bridge writes a credential folder for a consumer
// (PostgreSQL), the bridge's startupProbe on /readyz holds back every
// container after it until the folder holds the current set; it is probed
// often (the consumer starts soon after) and for longer than the bridge's
// own first_update_timeout (the kubelet does not kill a bridge still within
// it). Its readiness must not wait for the consumer: every reload action is
// one whose missing server is "no server to reload", never a failure
// (signal, postgres); an exec action would fail until the consumer runs
// and hold the pod NotReady.
func TestFolderConsumerStartsOnTheWrittenFolderAndNeitherWaitsForTheOther(t *testing.T) {
	o := load(t)
	folders := 0
	for _, p := range o.pods {
		t.Run(p.owner, func(t *testing.T) {
			for _, c := range p.spec.InitContainers {
				if !isBridge(c) || len(c.Args) == 0 || c.Args[0] != "run" {
					continue
				}
				file, ok := flagValue(c.Args, "--config")
				if !ok {
					t.Fatalf("%s: run without --config", c.Name)
				}
				cfg := loadConfig(t, o.fileFromConfigMap(t, p, c, file))
				if len(cfg.Files) == 0 {
					continue
				}
				folders++
				sp := c.StartupProbe
				if sp == nil || sp.HTTPGet == nil || sp.HTTPGet.Path != "/readyz" {
					t.Errorf("%s: writes a folder but has no startupProbe on /readyz: its consumer may start before the folder is written", c.Name)
					continue
				}
				period, failures := cmp.Or(sp.PeriodSeconds, 10), cmp.Or(sp.FailureThreshold, 3)
				if period > 2 {
					t.Errorf("%s: startupProbe every %ds: the consumer starts up to that long after the folder is written; want at most 2s", c.Name, period)
				}
				budget := time.Duration(period*failures) * time.Second
				if first := cfg.WorkloadAPI.WithDefaults().FirstUpdateTimeout; budget <= first {
					t.Errorf("%s: startupProbe gives up after %s, before workload_api.first_update_timeout %s: the kubelet would kill a bridge still waiting for its first SVID", c.Name, budget, first)
				}
				for _, f := range cfg.Files {
					for i, a := range f.OnRotate {
						if a.Signal == nil && a.Postgres == nil {
							t.Errorf("%s: files %s: on_rotate[%d] is neither signal nor postgres: it fails while the consumer has not started, and the bridge (and the pod) would not be ready", c.Name, f.Dir, i)
						}
					}
				}
			}
		})
	}
	if folders == 0 {
		t.Errorf("no bridge writes a credential folder; want PostgreSQL's")
	}
}

// loadConfig is config.Load without the file: parse, default, validate.
func loadConfig(t *testing.T, data string) *config.Config {
	t.Helper()
	cfg, err := config.Parse(strings.NewReader(data))
	if err != nil {
		t.Fatalf("bridge config: %v", err)
	}
	cfg.Default()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("bridge config: %v", err)
	}
	return cfg
}

func checkWorkloadAPI(t *testing.T, o *objects, p *pod, c container, cfg *config.Config) {
	sock, ok := strings.CutPrefix(cfg.WorkloadAPI.Address, "unix://")
	if !ok {
		t.Errorf("%s: workload_api.address %q: want the CSI driver's unix socket", c.Name, cfg.WorkloadAPI.Address)
		return
	}
	m, ok := mountOf(c, sock)
	if v := o.volume(p, m.Name); !ok || v == nil || v.CSI == nil {
		t.Errorf("%s: workload_api.address %s is not on the csi.spiffe.io volume", c.Name, sock)
	}
}

func checkAdmin(t *testing.T, c container, cfg *config.Config) {
	host, port, err := net.SplitHostPort(cfg.Admin.Address())
	if err != nil {
		t.Errorf("%s: admin.listen %q: %v", c.Name, cfg.Admin.Address(), err)
		return
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		t.Errorf("%s: admin.listen %s is loopback; the kubelet probes over the pod IP", c.Name, cfg.Admin.Address())
	}
	probes := []struct {
		kind, path string
		p          *probe
	}{{"liveness", "/livez", c.LivenessProbe}, {"readiness", "/readyz", c.ReadinessProbe}}
	if c.StartupProbe != nil {
		probes = append(probes, struct {
			kind, path string
			p          *probe
		}{"startup", "/readyz", c.StartupProbe})
	}
	for _, pr := range probes {
		if pr.p == nil || pr.p.HTTPGet == nil {
			t.Errorf("%s: no HTTP %s probe on %s", c.Name, pr.kind, pr.path)
			continue
		}
		if pr.p.HTTPGet.Path != pr.path {
			t.Errorf("%s: %s probe path %s, want %s", c.Name, pr.kind, pr.p.HTTPGet.Path, pr.path)
		}
		if got := containerPort(c, pr.p.HTTPGet.Port); strconv.Itoa(int(got)) != port {
			t.Errorf("%s: %s probe on port %d, admin.listen is %s", c.Name, pr.kind, got, cfg.Admin.Address())
		}
	}
}

// checkSDS: the socket is on an emptyDir shared with an Envoy that mounts
// it at the same path, runs with the bridge's uid (socket_mode 0600), and
// loads a bootstrap that points at that socket and asks only for served names.
func checkSDS(t *testing.T, o *objects, p *pod, bridge container, cfg *config.Config) {
	m, ok := mountOf(bridge, cfg.SDS.SocketPath)
	v := o.volume(p, m.Name)
	if !ok || v == nil || v.EmptyDir == nil {
		t.Errorf("%s: sds.socket %s is not on an emptyDir volume", bridge.Name, cfg.SDS.SocketPath)
		return
	}
	envoys := 0
	for _, c := range p.spec.Containers {
		if !isEnvoy(c) {
			continue
		}
		envoys++
		em, ok := mountOf(c, cfg.SDS.SocketPath)
		if !ok || em.Name != m.Name || em.MountPath != m.MountPath {
			t.Errorf("%s: does not mount volume %s at %s, where the bridge's socket is", c.Name, m.Name, m.MountPath)
		}
		if cfg.SDS.SocketMode&0o070 == 0 && uidOf(p, c) != uidOf(p, bridge) {
			t.Errorf("%s: runs as uid %d, the bridge as %d, and socket_mode %s lets only the bridge's uid connect", c.Name, uidOf(p, c), uidOf(p, bridge), cfg.SDS.SocketMode)
		}
		file, ok := flagValue(c.Args, "-c")
		if !ok {
			t.Errorf("%s: Envoy without -c", c.Name)
			continue
		}
		data := o.fileFromConfigMap(t, p, c, file)
		b, err := envoyboot.Parse([]byte(data))
		if err == nil {
			err = envoyboot.Check(b, envoyboot.NamesFromConfig(cfg))
		}
		if err != nil {
			t.Errorf("%s: %s: %v", c.Name, file, err)
			continue
		}
		if sock, err := envoyboot.BridgeSocket(b); err != nil || sock != cfg.SDS.SocketPath {
			t.Errorf("%s: the bootstrap's bridge socket is %q (%v), the bridge's sds.socket %s", c.Name, sock, err, cfg.SDS.SocketPath)
		}
		checkPeers(t, o, p, b)
	}
	if envoys == 0 {
		t.Errorf("the bridge serves SDS but no Envoy in %s uses it", p.owner)
	}
}

// checkPeers: the SPIFFE IDs in the bootstrap are ones the ClusterSPIFFEID
// gives to a service account that exists, and an upstream in the namespace
// is one of its Services, on one of its ports.
func checkPeers(t *testing.T, o *objects, p *pod, b *bootstrapv3.Bootstrap) {
	for _, id := range spiffeIDsIn(prototext.Format(b)) {
		sa, ok := strings.CutPrefix(id, trustDomain+"/ns/"+ns+"/sa/")
		if !ok || !o.serviceAccounts[sa] {
			t.Errorf("%s: the bootstrap names %s, which is no service account of namespace %s", p.owner, id, ns)
		}
	}
	for _, cl := range b.GetStaticResources().GetClusters() {
		for _, le := range cl.GetLoadAssignment().GetEndpoints() {
			for _, e := range le.GetLbEndpoints() {
				sa := e.GetEndpoint().GetAddress().GetSocketAddress()
				name, ok := strings.CutSuffix(sa.GetAddress(), "."+ns+".svc.cluster.local")
				if !ok {
					continue
				}
				found := false
				for _, s := range o.services {
					for _, sp := range s.Spec.Ports {
						found = found || (s.Metadata.Name == name && uint32(sp.Port) == sa.GetPortValue())
					}
				}
				if !found {
					t.Errorf("%s: cluster %s goes to %s:%d, which is no Service port in %s", p.owner, cl.GetName(), sa.GetAddress(), sa.GetPortValue(), ns)
				}
			}
		}
	}
}

func spiffeIDsIn(s string) []string {
	var ids []string
	for {
		i := strings.Index(s, "spiffe://")
		if i < 0 {
			return ids
		}
		s = s[i:]
		j := strings.IndexAny(s, "\" \n}")
		if j < 0 {
			j = len(s)
		}
		ids = append(ids, s[:j])
		s = s[j:]
	}
}

// checkFolder: the folder is an in-memory emptyDir that PostgreSQL reads at
// the same path; its files, key owner and reload action fit PostgreSQL.
func checkFolder(t *testing.T, o *objects, p *pod, bridge container, f config.Folder) {
	m, ok := mountOf(bridge, f.Dir)
	v := o.volume(p, m.Name)
	if !ok || m.MountPath != f.Dir || v == nil || v.EmptyDir == nil || v.EmptyDir.Medium != "Memory" {
		t.Errorf("%s: files dir %s should be the mount of an emptyDir with medium Memory (the key stays off the node's disk)", bridge.Name, f.Dir)
	}
	if m.ReadOnly {
		t.Errorf("%s: mounts %s read-only", bridge.Name, f.Dir)
	}
	var pg *container
	for i := range p.spec.Containers {
		if isPostgres(p.spec.Containers[i]) {
			pg = &p.spec.Containers[i]
		}
	}
	if pg == nil {
		t.Errorf("%s writes %s but the pod has no PostgreSQL", p.owner, f.Dir)
		return
	}
	if pm, ok := mountOf(*pg, f.Dir); !ok || pm.Name != m.Name || pm.MountPath != f.Dir {
		t.Errorf("postgres does not mount volume %s at %s", m.Name, f.Dir)
	}
	want := map[string]string{
		"ssl_cert_file": path.Join(f.Dir, f.CertFileName),
		"ssl_key_file":  path.Join(f.Dir, f.KeyFileName),
		"ssl_ca_file":   path.Join(f.Dir, f.BundleFileName),
	}
	args := strings.Join(pg.Args, " ")
	for k, v := range want {
		if !strings.Contains(args, k+"="+v) {
			t.Errorf("postgres args lack -c %s=%s", k, v)
		}
	}
	var uid int
	if f.Owner == nil {
		t.Errorf("files owner unset: PostgreSQL needs its key owned by its uid")
	} else if uid = f.Owner.UID; int64(uid) != uidOf(p, *pg) {
		t.Errorf("files owner uid %d, postgres runs as uid %d: PostgreSQL refuses the key", uid, uidOf(p, *pg))
	}
	if uidOf(p, bridge) != int64(uid) {
		t.Errorf("the bridge runs as uid %d: it can only give the key to uid %d (and signal it) as that uid", uidOf(p, bridge), uid)
	}
	pgdata := ""
	for _, e := range pg.Env {
		if e.Name == "PGDATA" {
			pgdata = e.Value
		}
	}
	signals := 0
	for _, a := range f.OnRotate {
		if a.Signal == nil {
			continue
		}
		signals++
		if a.Signal.PIDFile != path.Join(pgdata, "postmaster.pid") {
			t.Errorf("signal pid_file %s, PostgreSQL writes %s", a.Signal.PIDFile, path.Join(pgdata, "postmaster.pid"))
		}
		bm, ok1 := mountOf(bridge, a.Signal.PIDFile)
		pm, ok2 := mountOf(*pg, a.Signal.PIDFile)
		if !ok1 || !ok2 || bm.Name != pm.Name || bm.MountPath != pm.MountPath {
			t.Errorf("the bridge does not see %s where PostgreSQL writes it", a.Signal.PIDFile)
		}
		if p.spec.ShareProcessNamespace == nil || !*p.spec.ShareProcessNamespace {
			t.Errorf("a signal action needs shareProcessNamespace: true")
		}
	}
	if signals == 0 {
		t.Errorf("files %s: no reload action; PostgreSQL would keep serving the first certificate until it expires", f.Dir)
	}
	// An init step waits for valid material before PostgreSQL starts.
	waited := false
	for i, c := range p.spec.InitContainers {
		if !isBridge(c) || len(c.Args) == 0 || c.Args[0] != "wait" {
			continue
		}
		dir, _ := flagValue(c.Args, "--dir")
		if dir != f.Dir {
			continue
		}
		waited = true
		if i == 0 || p.spec.InitContainers[0].Name != bridge.Name {
			t.Errorf("%s must come after the bridge sidecar", c.Name)
		}
		if c.RestartPolicy != "" {
			t.Errorf("%s must be a plain init container that exits", c.Name)
		}
		if layout, _ := flagValue(c.Args, "--layout"); layout != "" && layout != string(f.Layout) {
			t.Errorf("%s: --layout %s, the folder is %s", c.Name, layout, f.Layout)
		}
		if tv, ok := flagValue(c.Args, "--timeout"); ok {
			if _, err := time.ParseDuration(tv); err != nil {
				t.Errorf("%s: --timeout %q: %v", c.Name, tv, err)
			}
		}
		if wm, ok := mountOf(c, f.Dir); !ok || wm.Name != m.Name {
			t.Errorf("%s does not mount the credential folder", c.Name)
		}
	}
	if !waited {
		t.Errorf("no init container runs sds-bridge wait --dir %s before PostgreSQL", f.Dir)
	}
}

// TestRegistration: the ClusterSPIFFEIDs give every bridge-carrying pod the
// IDs the Envoy bootstraps expect, one per workload, each with the class a
// default SPIRE Helm install watches.
func TestRegistration(t *testing.T) {
	o := load(t)
	if len(o.spiffeIDs) == 0 {
		t.Fatal("no ClusterSPIFFEID")
	}
	want := "spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}"
	for _, c := range o.spiffeIDs {
		// The SPIRE Helm charts run spire-controller-manager with this class
		// and watchClassless: false; a classless entry would be ignored.
		if c.Spec.ClassName != "spire-spire" {
			t.Errorf("ClusterSPIFFEID %s: className %q, want spire-spire (the SPIRE Helm charts' default)", c.Metadata.Name, c.Spec.ClassName)
		}
		if c.Spec.PodSelector == nil || c.Spec.PodSelector.MatchLabels["app.kubernetes.io/name"] == "" {
			t.Errorf("ClusterSPIFFEID %s: want a podSelector on one workload's app.kubernetes.io/name", c.Metadata.Name)
		}
	}
	for _, p := range o.pods {
		covered := false
		for _, c := range o.spiffeIDs {
			if c.Spec.SPIFFEIDTemplate != want {
				t.Errorf("ClusterSPIFFEID %s: spiffeIDTemplate %q, the bootstraps assume %q", c.Metadata.Name, c.Spec.SPIFFEIDTemplate, want)
			}
			nsOK := c.Spec.NamespaceSelector == nil || c.Spec.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] == ns
			if nsOK && c.Spec.PodSelector != nil && matches(c.Spec.PodSelector.MatchLabels, p.labels) {
				covered = true
			}
		}
		if !covered {
			t.Errorf("%s: no ClusterSPIFFEID selects its pods", p.owner)
		}
	}
}

// The README describes every manifest.
func TestReadmeNamesEveryManifest(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, d := range loadDocuments(t) {
		file, _, _ := strings.Cut(d.where, "#")
		if seen[file] {
			continue
		}
		seen[file] = true
		if !bytes.Contains(readme, []byte(filepath.ToSlash(file))) {
			t.Errorf("README.md does not mention %s", file)
		}
	}
}

// TestPostgresLoginsArePerWorkload: a network login to PostgreSQL is a
// verified client certificate whose subject CN (SPIRE's first DNS name of
// the entry) is mapped, by exact name, to a role. pg_ident.conf holds no
// regular expression (`spiffe /^.*$ app` let every SVID of the trust domain
// in), and every name it maps is the first DNS name the ClusterSPIFFEID gives
// a service account here, so the mapping names real workloads.
func TestPostgresLoginsArePerWorkload(t *testing.T) {
	o := load(t)
	cm, ok := o.configMaps["postgres-config"]
	if !ok {
		t.Fatal("no ConfigMap postgres-config")
	}
	maps := map[string]bool{}
	hostLines := 0
	for _, l := range confLines(cm.Data["pg_hba.conf"]) {
		f := strings.Fields(l)
		if f[0] == "local" {
			continue
		}
		hostLines++
		if f[0] != "hostssl" || len(f) < 5 || f[4] != "cert" {
			t.Errorf("pg_hba.conf: %q: a network login must be hostssl … cert", l)
			continue
		}
		if !slices.Contains(f[5:], "clientname=CN") {
			t.Errorf("pg_hba.conf: %q: want clientname=CN (the SVID's first DNS name); DN or none takes a name that is not the workload's", l)
		}
		m := ""
		for _, opt := range f[5:] {
			if v, ok := strings.CutPrefix(opt, "map="); ok {
				m = v
			}
		}
		if m == "" {
			t.Errorf("pg_hba.conf: %q: no map=: the CN itself would be the role", l)
			continue
		}
		maps[m] = true
	}
	if hostLines == 0 {
		t.Fatal("pg_hba.conf allows no network login")
	}
	// First DNS name per service account, as the ClusterSPIFFEID makes it.
	firstDNS := map[string]string{}
	for _, c := range o.spiffeIDs {
		if len(c.Spec.DNSNameTemplates) == 0 {
			continue
		}
		for sa := range o.serviceAccounts {
			r := strings.NewReplacer("{{ .PodSpec.ServiceAccountName }}", sa, "{{ .PodMeta.Namespace }}", ns)
			firstDNS[r.Replace(c.Spec.DNSNameTemplates[0])] = sa
		}
	}
	mapped := 0
	for _, l := range confLines(cm.Data["pg_ident.conf"]) {
		f := strings.Fields(l)
		if len(f) != 3 {
			t.Errorf("pg_ident.conf: %q: want MAPNAME SYSTEM-USERNAME PG-USERNAME", l)
			continue
		}
		if !maps[f[0]] {
			continue
		}
		mapped++
		if strings.HasPrefix(f[1], "/") || strings.HasPrefix(f[1], `"/`) {
			t.Errorf("pg_ident.conf: %q: a regular expression; map exact workload names", l)
			continue
		}
		sa, ok := firstDNS[f[1]]
		if !ok {
			t.Errorf("pg_ident.conf: %q: %s is no service account's first DNS name in the ClusterSPIFFEID", l, f[1])
		}
		if sa == "postgres" {
			t.Errorf("pg_ident.conf: %q: the server's own identity logs in", l)
		}
	}
	if mapped == 0 {
		t.Error("pg_ident.conf maps no workload: nobody can log in over the network")
	}
}

// confLines returns the non-empty, non-comment lines of a PostgreSQL
// config file.
func confLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if i := strings.Index(l, "#"); i >= 0 {
			l = l[:i]
		}
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}
