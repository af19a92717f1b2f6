//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.yaml.in/yaml/v3"
)

// The Pod-order test runs the Pod templates of deploy/kubernetes/base, as
// kustomize renders them, with local processes in the order the kubelet
// uses. What stands in for what (the "node"):
//
//   - volumes: every volume is a directory under <work>/<pod>/vol/<name>.
//     emptyDir and the StatefulSet's volumeClaimTemplates are empty dirs
//     (group fsGroup, setgid, as the kubelet makes them); a configMap volume
//     holds the ConfigMap's keys (or its items) as files; the SPIFFE CSI
//     volume (csi.spiffe.io) holds the test agent's socket under the name
//     the SPIRE Helm chart gives it, spire-agent.sock (a symlink).
//   - paths: each container has its table mountPath → host dir, from its
//     own volumeMounts only. Every string a container gets from the
//     manifest (command, args, env values, exec probes) and every file of
//     a configMap volume it mounts (a copy per container) is rewritten
//     through it in one pass, so "/spiffe-certs/svid.pem" in PostgreSQL's
//     args and "/spiffe-certs" in the bridge's config name the same host
//     file only if both containers mount the same volume at those paths;
//     a path a container does not mount stays as it is and fails as in
//     the container.
//   - ports: the pod's network namespace is a table port → free loopback
//     port, filled on first use. Addresses host:port in args and config
//     files (0.0.0.0, 127.0.0.1, localhost, [::]) become 127.0.0.1:<mapped>;
//     probes resolve a named port through the container's ports, then the
//     table. The postgres image's processes get PGPORT=<mapped 5432> (its
//     default port), which also names its unix socket.
//   - users: runAsUser/runAsGroup as declared, except that the postgres
//     image's uid (999) becomes the local postgres account (initdb needs a
//     passwd entry, and gid 999 is a system group here); "999:999" in a
//     configMap file is rewritten the same way.
//   - images: sds-bridge → the bridge binary built by the suite; postgres →
//     Debian's initdb/postgres/psql/pg_isready, run as the official image's
//     docker-entrypoint.sh does (initdb into an empty PGDATA, a temporary
//     server with the manifest's args to run /docker-entrypoint-initdb.d,
//     then postgres with the manifest's args); envoy → the suite's
//     Envoy-behaving SDS client, driven by the bootstrap named by -c (the
//     SDS cluster's pipe, the secret names, the listener's port, bound once
//     the secrets arrived); http-echo → a tiny in-process HTTP server on
//     -listen.
//
// One divergence from Envoy: the stand-in binds its listener only once its
// secrets arrived, while Envoy also binds after initial_fetch_timeout
// (10 s) without them, so the backend's tcpSocket readinessProbe would
// pass in a cluster with no certificate at all; the rotation checks below
// (a login with the SDS certificate) are what proves Envoy got them.
//
// Not modelled (a real cluster adds them): read-only mounts and root
// filesystems (beyond checking the postgres image writes only to writable
// mounts); separate PID namespaces (every process here sees every other,
// so dropping shareProcessNamespace would not break this run, while it
// stops the bridge's SIGHUP in a cluster); restarts after a failed
// liveness probe or an exit (either fails the test here); resource
// limits, seccomp, capabilities; the CSI driver itself; Envoy's uid (the
// stand-in runs in the test process, as root, which the bridge's SDS
// socket also serves).
//
// Timing follows the kubelet: a probe runs when its container starts (or
// its startupProbe passed) and then every periodSeconds; Ready flips on
// one success and back after failureThreshold failures in a row.
// Containers start one after another without waiting for each other;
// only a native sidecar's startupProbe holds back what follows it.

// renderBase builds dir (a kustomization) with the kustomizetest module's
// render command and returns the objects.
func renderBase(t testing.TB, dir string) []k8sObject {
	t.Helper()
	return renderWith(t, "../deploy/kubernetes/kustomizetest", "./cmd/render", dir)
}

// renderChart renders deploy/helm/sds-bridge as `helm template` would, in
// namespace ns, with the helmtest module's render command (Helm's Go SDK),
// and returns the objects.
func renderChart(t testing.TB, ns string, set ...string) []k8sObject {
	t.Helper()
	args := []string{"./cmd/render", "-namespace", ns}
	for _, kv := range set {
		args = append(args, "-set", kv)
	}
	return renderWith(t, "../deploy/helm/helmtest", append(args, "../sds-bridge")...)
}

// renderWith runs `go run args…` in the nested module at modDir and decodes
// the YAML stream it prints.
func renderWith(t testing.TB, modDir string, args ...string) []k8sObject {
	t.Helper()
	mod, err := filepath.Abs(modDir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool(), append([]string{"run"}, args...)...)
	cmd.Dir = mod
	// The nested module on its own: kustomize and Helm stay out of the
	// main go.mod.
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("e2e: render %v: %v\n%s", args, err, stderr.String())
	}
	var objs []k8sObject
	dec := yaml.NewDecoder(bytes.NewReader(out))
	for {
		var o k8sObject
		if err := dec.Decode(&o); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("e2e: decode rendered %v: %v", args, err)
		}
		objs = append(objs, o)
	}
	return objs
}

// k8sObject is the part of a rendered object the runner reads.
type k8sObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec struct {
		Template struct {
			Spec podSpec `yaml:"spec"`
		} `yaml:"template"`
		VolumeClaimTemplates []struct {
			Metadata struct {
				Name string `yaml:"name"`
			} `yaml:"metadata"`
		} `yaml:"volumeClaimTemplates"`
	} `yaml:"spec"`
}

type podSpec struct {
	SecurityContext struct {
		RunAsUser  *int `yaml:"runAsUser"`
		RunAsGroup *int `yaml:"runAsGroup"`
		FSGroup    *int `yaml:"fsGroup"`
	} `yaml:"securityContext"`
	InitContainers []container `yaml:"initContainers"`
	Containers     []container `yaml:"containers"`
	Volumes        []volume    `yaml:"volumes"`
}

type container struct {
	Name          string   `yaml:"name"`
	Image         string   `yaml:"image"`
	Command       []string `yaml:"command"`
	Args          []string `yaml:"args"`
	RestartPolicy string   `yaml:"restartPolicy"`
	Env           []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	StartupProbe   *probe `yaml:"startupProbe"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	VolumeMounts   []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
	SecurityContext struct {
		RunAsUser  *int `yaml:"runAsUser"`
		RunAsGroup *int `yaml:"runAsGroup"`
	} `yaml:"securityContext"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"` // a number or a port name
	} `yaml:"httpGet"`
	Exec *struct {
		Command []string `yaml:"command"`
	} `yaml:"exec"`
	TCPSocket *struct {
		Port string `yaml:"port"`
	} `yaml:"tcpSocket"`
	InitialDelaySeconds int `yaml:"initialDelaySeconds"`
	PeriodSeconds       int `yaml:"periodSeconds"`
	TimeoutSeconds      int `yaml:"timeoutSeconds"`
	FailureThreshold    int `yaml:"failureThreshold"`
}

// Kubernetes' defaults for unset probe fields.
func (p *probe) period() time.Duration  { return secondsOr(p.PeriodSeconds, 10) }
func (p *probe) timeout() time.Duration { return secondsOr(p.TimeoutSeconds, 1) }
func (p *probe) failures() int {
	if p.FailureThreshold <= 0 {
		return 3
	}
	return p.FailureThreshold
}

func secondsOr(n, def int) time.Duration {
	if n <= 0 {
		n = def
	}
	return time.Duration(n) * time.Second
}

type volume struct {
	Name      string         `yaml:"name"`
	EmptyDir  map[string]any `yaml:"emptyDir"`
	ConfigMap *struct {
		Name  string `yaml:"name"`
		Items []struct {
			Key  string `yaml:"key"`
			Path string `yaml:"path"`
		} `yaml:"items"`
	} `yaml:"configMap"`
	CSI *struct {
		Driver string `yaml:"driver"`
	} `yaml:"csi"`
}

// podTemplate finds the pod template of a workload and the ConfigMaps.
func podTemplate(t testing.TB, objs []k8sObject, kind, name string) (k8sObject, map[string]map[string]string) {
	t.Helper()
	cms := map[string]map[string]string{}
	var found *k8sObject
	for i, o := range objs {
		if o.Kind == "ConfigMap" {
			cms[o.Metadata.Name] = o.Data
		}
		if o.Kind == kind && o.Metadata.Name == name {
			found = &objs[i]
		}
	}
	if found == nil {
		t.Fatalf("e2e: no %s %s in the rendered base", kind, name)
	}
	return *found, cms
}

// podEnv is what the test gives the pods: the agent, the local accounts.
type podEnv struct {
	AgentSocket string
	PGBinDir    string
	PGUser      *osUser
}

// pod is one Pod template run as local processes.
type pod struct {
	t    testing.TB
	name string
	obj  k8sObject
	spec podSpec
	cms  map[string]map[string]string
	env  podEnv
	dir  string
	vols map[string]string // volume name → host dir
	// cmFiles are the files of each configMap volume, by volume name:
	// written once per container that mounts it, rewritten through that
	// container's mounts.
	cmFiles map[string]map[string]string

	mu      sync.Mutex
	ports   map[int]int // pod port → loopback port
	probes  map[string]*probeState
	running map[string]func() bool // container → still running
	envoys  map[string]*envoyProc
	broken  []string // liveness failures, exits: a kubelet would restart
	// failed is every failed readiness or liveness probe run, with its
	// time: the kubelet flips Ready only after failureThreshold of them,
	// which a 20 s rotation window could hide.
	failed  []probeFailure
	stopped bool

	Started time.Time
}

type probeFailure struct {
	at  time.Time
	why string
}

type mountMap struct {
	path, host string
}

type probeState struct {
	ready   bool
	lastErr string
}

func newPod(t testing.TB, workDir, name string, obj k8sObject, cms map[string]map[string]string, env podEnv) *pod {
	p := &pod{
		t: t, name: name, obj: obj, spec: obj.Spec.Template.Spec, cms: cms, env: env,
		dir:     filepath.Join(workDir, name),
		vols:    map[string]string{},
		cmFiles: map[string]map[string]string{},
		ports:   map[int]int{},
		probes:  map[string]*probeState{},
		running: map[string]func() bool{},
		envoys:  map[string]*envoyProc{},
	}
	t.Cleanup(func() {
		p.mu.Lock()
		p.stopped = true
		p.mu.Unlock()
	})
	mkdirOwned(t, p.dir, 0o755, nil)
	mkdirOwned(t, filepath.Join(p.dir, "logs"), 0o777, nil)
	p.makeVolumes()
	return p
}

// imageKind is an image's repository name without registry and tag: it
// picks the local program that stands in for the image.
func imageKind(image string) string {
	repo := image
	if i := strings.LastIndexByte(repo, '/'); i >= 0 {
		repo = repo[i+1:]
	}
	repo, _, _ = strings.Cut(repo, "@")
	repo, _, _ = strings.Cut(repo, ":")
	return repo
}

// user is the account a container runs as (see the mapping at the top).
func (p *pod) user(c container) *osUser {
	uid, gid := p.spec.SecurityContext.RunAsUser, p.spec.SecurityContext.RunAsGroup
	if c.SecurityContext.RunAsUser != nil {
		uid = c.SecurityContext.RunAsUser
	}
	if c.SecurityContext.RunAsGroup != nil {
		gid = c.SecurityContext.RunAsGroup
	}
	if uid == nil {
		p.t.Fatalf("e2e: %s/%s: no runAsUser (restricted needs runAsNonRoot; the runner needs a uid)", p.name, c.Name)
	}
	if *uid == 999 {
		return p.env.PGUser
	}
	g := *uid
	if gid != nil {
		g = *gid
	}
	return &osUser{Name: strconv.Itoa(*uid), UID: uint32(*uid), GID: uint32(g)}
}

// fsGroup is the group the kubelet gives volumes (mapped as user is).
func (p *pod) fsGroup() int {
	fg := p.spec.SecurityContext.FSGroup
	switch {
	case fg == nil:
		return -1
	case *fg == 999:
		return int(p.env.PGUser.GID)
	default:
		return *fg
	}
}

func (p *pod) makeVolumes() {
	t := p.t
	vols := p.spec.Volumes
	for _, vct := range p.obj.Spec.VolumeClaimTemplates {
		vols = append(vols, volume{Name: vct.Metadata.Name, EmptyDir: map[string]any{}})
	}
	for _, v := range vols {
		host := filepath.Join(p.dir, "vol", v.Name)
		switch {
		case v.EmptyDir != nil:
			// As the kubelet makes them: a directory 0777, or a tmpfs
			// whose root is 1777 (medium: Memory).
			mode := os.FileMode(0o777)
			if v.EmptyDir["medium"] == "Memory" {
				mode |= os.ModeSticky
			}
			p.mkVolumeDir(host, mode)
		case v.ConfigMap != nil:
			p.mkVolumeDir(host, 0o755)
			data, ok := p.cms[v.ConfigMap.Name]
			if !ok {
				t.Fatalf("e2e: %s: volume %s: no ConfigMap %s (the pod would stay ContainerCreating)", p.name, v.Name, v.ConfigMap.Name)
			}
			files := map[string]string{}
			if len(v.ConfigMap.Items) == 0 {
				for k := range data {
					files[k] = k
				}
			}
			for _, it := range v.ConfigMap.Items {
				if _, ok := data[it.Key]; !ok {
					t.Fatalf("e2e: %s: volume %s: ConfigMap %s has no key %s", p.name, v.Name, v.ConfigMap.Name, it.Key)
				}
				files[it.Key] = it.Path
			}
			content := map[string]string{}
			for key, rel := range files {
				content[rel] = data[key]
			}
			p.cmFiles[v.Name] = content
		case v.CSI != nil && v.CSI.Driver == "csi.spiffe.io":
			p.mkVolumeDir(host, 0o755)
			if err := os.Symlink(p.env.AgentSocket, filepath.Join(host, "spire-agent.sock")); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("e2e: %s: volume %s: a kind the runner does not know", p.name, v.Name)
		}
		p.vols[v.Name] = host
	}
	for _, c := range slices.Concat(p.spec.InitContainers, p.spec.Containers) {
		for _, m := range c.VolumeMounts {
			if _, ok := p.vols[m.Name]; !ok {
				t.Fatalf("e2e: %s/%s mounts volume %s, which the pod does not declare", p.name, c.Name, m.Name)
			}
			if files, ok := p.cmFiles[m.Name]; ok {
				dir := p.hostDir(c, m.Name)
				mkdirOwned(t, dir, 0o755, nil)
				for rel, data := range files {
					p.writeConfigFile(c, filepath.Join(dir, rel), data)
				}
			}
		}
	}
}

// hostDir is where a container's volume lives on the host: the shared dir,
// or for a configMap the container's own copy (rewritten for its mounts).
func (p *pod) hostDir(c container, vol string) string {
	if _, ok := p.cmFiles[vol]; ok {
		return filepath.Join(p.vols[vol], c.Name)
	}
	return p.vols[vol]
}

// mountsOf is a container's path table, longest mountPath first.
func (p *pod) mountsOf(c container) []mountMap {
	var out []mountMap
	for _, m := range c.VolumeMounts {
		out = append(out, mountMap{path: m.MountPath, host: p.hostDir(c, m.Name)})
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i].path) > len(out[j].path) })
	return out
}

func (p *pod) mkVolumeDir(dir string, mode os.FileMode) {
	mkdirOwned(p.t, dir, mode.Perm(), nil)
	if err := os.Chmod(dir, mode); err != nil {
		p.t.Fatal(err)
	}
	if fg := p.fsGroup(); fg >= 0 {
		if err := os.Chown(dir, 0, fg); err != nil {
			p.t.Fatal(err)
		}
		if err := os.Chmod(dir, mode|os.ModeSetgid|0o070); err != nil {
			p.t.Fatal(err)
		}
	}
}

func (p *pod) writeConfigFile(c container, path, data string) {
	s := p.sub(c, data)
	uid, gid := p.spec.SecurityContext.RunAsUser, p.spec.SecurityContext.RunAsGroup
	if uid != nil && gid != nil && *uid == 999 {
		s = strings.ReplaceAll(s, fmt.Sprintf("%d:%d", *uid, *gid), p.env.PGUser.Owner())
	}
	writeFile(p.t, path, []byte(s), 0o644, nil)
}

// addrRE finds host:port addresses in args and config files.
var addrRE = regexp.MustCompile(`(?:0\.0\.0\.0|127\.0\.0\.1|localhost|\[::\]):([0-9]{1,5})\b`)

// sub rewrites one string of the manifest: mount paths to host dirs (in one
// pass, so a host path is never rewritten again) and addresses to the
// pod's loopback ports.
func (p *pod) sub(c container, s string) string {
	mounts := p.mountsOf(c)
	isPath := func(b byte) bool {
		return b == '/' || b == '.' || b == '-' || b == '_' || (b >= '0' && b <= '9') || (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z')
	}
	var out strings.Builder
	for i := 0; i < len(s); {
		matched := false
		// A path starts the string, follows a non-path character, or
		// follows a URL scheme (unix:///spiffe-workload-api/…).
		if s[i] == '/' && (i == 0 || !isPath(s[i-1]) || strings.HasSuffix(s[:i], "://")) {
			for _, m := range mounts {
				end := i + len(m.path)
				if strings.HasPrefix(s[i:], m.path) && (end == len(s) || s[end] == '/' || !isPath(s[end])) {
					out.WriteString(m.host)
					i, matched = end, true
					break
				}
			}
		}
		if !matched {
			out.WriteByte(s[i])
			i++
		}
	}
	return addrRE.ReplaceAllStringFunc(out.String(), func(a string) string {
		n, _ := strconv.Atoi(addrRE.FindStringSubmatch(a)[1])
		return fmt.Sprintf("127.0.0.1:%d", p.port(n))
	})
}

// port maps a port of the pod's network namespace to a loopback port.
func (p *pod) port(n int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if hp, ok := p.ports[n]; ok {
		return hp
	}
	hp := freePort(p.t)
	p.ports[n] = hp
	return hp
}

// resolvePort is a probe's port: a number, or a name of the container's ports.
func (p *pod) resolvePort(c container, port string) (int, error) {
	if n, err := strconv.Atoi(port); err == nil {
		return p.port(n), nil
	}
	for _, cp := range c.Ports {
		if cp.Name == port {
			return p.port(cp.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("container %s has no port named %q", c.Name, port)
}

// mountOf is the host path of a container path, and whether its mount is
// writable; ok is false when no mount holds it (the image's own,
// read-only, root filesystem).
func (p *pod) mountOf(c container, path string) (host string, writable, ok bool) {
	best := -1
	for i, m := range c.VolumeMounts {
		if (path == m.MountPath || strings.HasPrefix(path, m.MountPath+"/")) && (best < 0 || len(m.MountPath) > len(c.VolumeMounts[best].MountPath)) {
			best = i
		}
	}
	if best < 0 {
		return "", false, false
	}
	m := c.VolumeMounts[best]
	return p.hostDir(c, m.Name) + strings.TrimPrefix(path, m.MountPath), !m.ReadOnly, true
}

// containerEnv is the manifest's env, rewritten, plus what the image sets.
func (p *pod) containerEnv(c container) []string {
	var env []string
	for _, e := range c.Env {
		env = append(env, e.Name+"="+p.sub(c, e.Value))
	}
	if imageKind(c.Image) == "postgres" {
		env = append(env, fmt.Sprintf("PGPORT=%d", p.port(5432)), "PATH="+p.env.PGBinDir+":"+os.Getenv("PATH"))
	}
	return env
}

func (p *pod) argv(c container) []string {
	var out []string
	for _, a := range slices.Concat(c.Command, c.Args) {
		out = append(out, p.sub(c, a))
	}
	return out
}

func (p *pod) logPath(c container, what string) string {
	// The temporary server's log is written by pg_ctl as the container's
	// user: the node's log dir is open to all.
	return filepath.Join(p.dir, "logs", c.Name+what+".log")
}

// Run starts the pod in the kubelet's order and returns when every
// container has been started (not when the pod is Ready): init containers
// one by one, each run to completion, a native sidecar started and its
// startupProbe awaited; then the containers. Probes run from then on.
func (p *pod) Run(ctx context.Context) error {
	p.Started = time.Now()
	for _, c := range p.spec.InitContainers {
		if c.RestartPolicy == "Always" {
			if err := p.start(ctx, c); err != nil {
				return err
			}
			if c.StartupProbe != nil {
				if err := p.awaitStartup(ctx, c); err != nil {
					return err
				}
			}
			p.startProbes(ctx, c)
			continue
		}
		if err := p.runToCompletion(ctx, c); err != nil {
			return err
		}
	}
	// The containers start one after another without waiting for each
	// other's probes; readiness and liveness wait for a startupProbe.
	startupErrs := make(chan error, len(p.spec.Containers))
	for _, c := range p.spec.Containers {
		if err := p.start(ctx, c); err != nil {
			return err
		}
		p.markStarting(c)
		go func() {
			if c.StartupProbe != nil {
				if err := p.awaitStartup(ctx, c); err != nil {
					startupErrs <- err
					return
				}
			}
			p.startProbes(ctx, c)
			startupErrs <- nil
		}()
	}
	go func() {
		for range p.spec.Containers {
			if err := <-startupErrs; err != nil {
				p.mu.Lock()
				p.broken = append(p.broken, err.Error())
				p.mu.Unlock()
			}
		}
	}()
	return nil
}

// markStarting records a started container that is not ready yet.
func (p *pod) markStarting(c container) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.probes[c.Name] = &probeState{lastErr: "startupProbe has not passed"}
}

func (p *pod) runToCompletion(ctx context.Context, c container) error {
	switch imageKind(c.Image) {
	case "sds-bridge":
		args := p.argv(c)
		spec := cmdSpec{Name: p.name + "/" + c.Name, Path: bridgeBin, Args: args, Env: p.containerEnv(c), User: p.user(c), Dir: p.dir}
		out, code, err := runCmd(ctx, spec)
		_ = os.WriteFile(p.logPath(c, ""), []byte(out), 0o644)
		if err != nil || code != 0 {
			return fmt.Errorf("init container %s: exit %d %v: %s", c.Name, code, err, oneLine(out))
		}
		return nil
	default:
		return fmt.Errorf("init container %s: no local program for image %s", c.Name, c.Image)
	}
}

// start starts one long-running container.
func (p *pod) start(ctx context.Context, c container) error {
	var alive func() bool
	switch imageKind(c.Image) {
	case "sds-bridge":
		pr := startProc(p.t, cmdSpec{Name: p.name + "/" + c.Name, Path: bridgeBin, Args: p.argv(c), Env: p.containerEnv(c), User: p.user(c), Dir: p.dir}, p.logPath(c, ""))
		alive = func() bool { return !pr.Exited() }
	case "postgres":
		pr, err := p.startPostgres(ctx, c)
		if err != nil {
			return fmt.Errorf("container %s: %w", c.Name, err)
		}
		alive = func() bool { return !pr.Exited() }
	case "envoy":
		e, err := p.startEnvoy(c)
		if err != nil {
			return fmt.Errorf("container %s: %w", c.Name, err)
		}
		alive = e.alive
		p.mu.Lock()
		p.envoys[c.Name] = e
		p.mu.Unlock()
	case "http-echo":
		a, err := p.startEcho(c)
		if err != nil {
			return fmt.Errorf("container %s: %w", c.Name, err)
		}
		alive = a
	default:
		return fmt.Errorf("container %s: no local program for image %s", c.Name, c.Image)
	}
	p.mu.Lock()
	p.running[c.Name] = alive
	p.mu.Unlock()
	return nil
}

// startPostgres is the official image's docker-entrypoint.sh with Debian's
// binaries: initdb into an empty PGDATA, a temporary server (the manifest's
// args, no TCP) for /docker-entrypoint-initdb.d/*.sql, then the server.
func (p *pod) startPostgres(ctx context.Context, c container) (*proc, error) {
	u := p.user(c)
	env := p.containerEnv(c)
	var pgdata string
	for _, e := range c.Env {
		if e.Name == "PGDATA" {
			pgdata = e.Value
		}
	}
	if pgdata == "" {
		pgdata = "/var/lib/postgresql/data" // the image's default
	}
	// The image writes PGDATA and its socket directory; with
	// readOnlyRootFilesystem each must be on a writable mount.
	hostData, w, ok := p.mountOf(c, pgdata)
	if !ok || !w {
		return nil, fmt.Errorf("PGDATA %s is not on a writable volume (read-only root filesystem)", pgdata)
	}
	sockDir := "/var/run/postgresql"
	hostSock, w, ok := p.mountOf(c, sockDir)
	if !ok || !w {
		return nil, fmt.Errorf("%s (unix_socket_directories) is not on a writable volume (read-only root filesystem)", sockDir)
	}
	pg := func(tool string, args ...string) cmdSpec {
		return cmdSpec{Name: p.name + "/" + c.Name + " " + tool, Path: filepath.Join(p.env.PGBinDir, tool), Args: args, Env: env, User: u, Dir: p.dir}
	}
	// The image's own settings before the manifest's args, which win.
	imageArgs := []string{"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=" + hostSock}
	args := append(imageArgs, p.argv(c)...)
	if _, err := os.Stat(filepath.Join(hostData, "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		pw := filepath.Join(p.dir, "pwfile")
		writeFile(p.t, pw, []byte(envValue(c, "POSTGRES_PASSWORD")+"\n"), 0o600, u)
		if out, code, err := runCmd(ctx, pg("initdb", "-D", hostData, "--username=postgres", "--pwfile="+pw, "--no-sync", "--no-instructions")); err != nil || code != 0 {
			return nil, fmt.Errorf("initdb: exit %d %v: %s", code, err, out)
		}
		tmpArgs := strings.Join(append(slices.Clone(args), "-c", "listen_addresses="), " ")
		if out, code, err := runCmd(ctx, pg("pg_ctl", "-D", hostData, "-o", tmpArgs, "-l", p.logPath(c, "-init"), "-w", "start")); err != nil || code != 0 {
			return nil, fmt.Errorf("temporary server: exit %d %v: %s\n%s", code, err, out, tailFile(p.logPath(c, "-init"), 20))
		}
		initDir, _, ok := p.mountOf(c, "/docker-entrypoint-initdb.d")
		var initErr error
		if ok {
			files, _ := filepath.Glob(filepath.Join(initDir, "*.sql"))
			sort.Strings(files)
			for _, f := range files {
				out, code, err := runCmd(ctx, pg("psql", "-v", "ON_ERROR_STOP=1", "--no-password", "--no-psqlrc", "-h", hostSock, "-U", "postgres", "-d", "postgres", "-f", f))
				if err != nil || code != 0 {
					initErr = fmt.Errorf("%s: exit %d %v: %s", filepath.Base(f), code, err, out)
					break
				}
			}
		}
		if out, code, err := runCmd(ctx, pg("pg_ctl", "-D", hostData, "-m", "fast", "-w", "stop")); err != nil || code != 0 {
			return nil, fmt.Errorf("stop the temporary server: exit %d %v: %s", code, err, out)
		}
		if initErr != nil {
			return nil, initErr
		}
	}
	spec := pg("postgres", args...)
	spec.Name = p.name + "/" + c.Name
	return startProc(p.t, spec, p.logPath(c, "")), nil
}

func envValue(c container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// envoyProc is Envoy as far as the pod sees it: SDS from the bootstrap's
// cluster, a listener bound once its secrets arrived.
type envoyProc struct {
	Client *envoyClient
	Names  []string
	mu     sync.Mutex
	err    error
}

func (e *envoyProc) alive() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err == nil && e.Client.Open()
}

// envoyBootstrap is the part of an Envoy bootstrap the stand-in reads.
type envoyBootstrap struct {
	StaticResources struct {
		Listeners []struct {
			Address struct {
				SocketAddress struct {
					PortValue int `yaml:"port_value"`
				} `yaml:"socket_address"`
			} `yaml:"address"`
		} `yaml:"listeners"`
		Clusters []struct {
			Name           string `yaml:"name"`
			LoadAssignment struct {
				Endpoints []struct {
					LbEndpoints []struct {
						Endpoint struct {
							Address struct {
								Pipe *struct {
									Path string `yaml:"path"`
								} `yaml:"pipe"`
							} `yaml:"address"`
						} `yaml:"endpoint"`
					} `yaml:"lb_endpoints"`
				} `yaml:"endpoints"`
			} `yaml:"load_assignment"`
		} `yaml:"clusters"`
	} `yaml:"static_resources"`
}

// sdsNameRE finds the SDS secret names a bootstrap subscribes to.
var sdsNameRE = regexp.MustCompile(`(?m)(?:tls_certificate_sds_secret_configs:\s*\n(?:\s*#.*\n)*\s*-\s*|validation_context_sds_secret_config:\s*\n(?:\s*#.*\n)*\s*)name:\s*(\S+)`)

func (p *pod) startEnvoy(c container) (*envoyProc, error) {
	args := p.argv(c)
	var bootPath string
	for i, a := range args {
		if (a == "-c" || a == "--config-path") && i+1 < len(args) {
			bootPath = args[i+1]
		}
	}
	raw, err := os.ReadFile(bootPath)
	if err != nil {
		return nil, fmt.Errorf("envoy: bootstrap -c: %w", err)
	}
	var boot envoyBootstrap
	if err := yaml.Unmarshal(raw, &boot); err != nil {
		return nil, fmt.Errorf("envoy: bootstrap %s: %w", bootPath, err)
	}
	var pipe string
	for _, cl := range boot.StaticResources.Clusters {
		for _, ep := range cl.LoadAssignment.Endpoints {
			for _, lb := range ep.LbEndpoints {
				if pp := lb.Endpoint.Address.Pipe; pp != nil && cl.Name == "sds-bridge" {
					pipe = pp.Path
				}
			}
		}
	}
	var names []string
	for _, m := range sdsNameRE.FindAllStringSubmatch(string(raw), -1) {
		if !slices.Contains(names, m[1]) {
			names = append(names, m[1])
		}
	}
	if pipe == "" || len(names) == 0 || len(boot.StaticResources.Listeners) == 0 {
		return nil, fmt.Errorf("envoy: bootstrap %s: SDS pipe %q, secrets %v, %d listeners", bootPath, pipe, names, len(boot.StaticResources.Listeners))
	}
	e := &envoyProc{Client: newEnvoyClient(p.t, dialSDS(p.t, pipe), names...), Names: names}
	listenPort := p.port(boot.StaticResources.Listeners[0].Address.SocketAddress.PortValue)
	go func() {
		// A listener warms until its secrets arrive; then it binds.
		for {
			st := e.Client.Latest()
			if len(st.Secrets) >= len(names) {
				break
			}
			if !e.Client.Open() {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", listenPort))
		if err != nil {
			e.mu.Lock()
			e.err = err
			e.mu.Unlock()
			return
		}
		go func() {
			for {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				_ = conn.Close()
			}
		}()
		for e.Client.Open() {
			time.Sleep(100 * time.Millisecond)
		}
		_ = ln.Close()
	}()
	return e, nil
}

// startEcho stands in for hashicorp/http-echo: -listen and -text.
func (p *pod) startEcho(c container) (func() bool, error) {
	addr, text := "", ""
	for _, a := range p.argv(c) {
		if v, ok := strings.CutPrefix(a, "-listen="); ok {
			addr = v
		}
		if v, ok := strings.CutPrefix(a, "-text="); ok {
			text = v
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http-echo -listen=%s: %w", addr, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, text) }), ReadHeaderTimeout: time.Second}
	done := make(chan struct{})
	go func() { _ = srv.Serve(ln); close(done) }()
	p.t.Cleanup(func() { _ = srv.Close(); <-done })
	return func() bool {
		select {
		case <-done:
			return false
		default:
			return true
		}
	}, nil
}

// probeOnce runs one probe as the kubelet would.
func (p *pod) probeOnce(ctx context.Context, c container, pr *probe) error {
	ctx, cancel := context.WithTimeout(ctx, pr.timeout())
	defer cancel()
	switch {
	case pr.HTTPGet != nil:
		port, err := p.resolvePort(c, pr.HTTPGet.Port)
		if err != nil {
			return err
		}
		code, body, err := httpGet(ctx, fmt.Sprintf("http://127.0.0.1:%d%s", port, pr.HTTPGet.Path))
		if err != nil {
			return err
		}
		if code < 200 || code >= 400 {
			return fmt.Errorf("GET %s: %d %s", pr.HTTPGet.Path, code, oneLine(body))
		}
		return nil
	case pr.TCPSocket != nil:
		port, err := p.resolvePort(c, pr.TCPSocket.Port)
		if err != nil {
			return err
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return err
		}
		return conn.Close()
	case pr.Exec != nil:
		argv := make([]string, len(pr.Exec.Command))
		for i, a := range pr.Exec.Command {
			argv[i] = p.sub(c, a)
		}
		path := argv[0]
		if !filepath.IsAbs(path) && imageKind(c.Image) == "postgres" {
			path = filepath.Join(p.env.PGBinDir, path)
		}
		out, code, err := runCmd(ctx, cmdSpec{Name: c.Name + " probe", Path: path, Args: argv[1:], Env: p.containerEnv(c), User: p.user(c), Dir: p.dir})
		if err != nil {
			return err
		}
		if code != 0 {
			return fmt.Errorf("%s: exit %d: %s", strings.Join(pr.Exec.Command, " "), code, oneLine(out))
		}
		return nil
	}
	return errors.New("a probe with no handler")
}

// awaitStartup polls a startupProbe until it succeeds; failureThreshold
// failures in a row is a container the kubelet would kill.
func (p *pod) awaitStartup(ctx context.Context, c container) error {
	pr := c.StartupProbe
	if err := sleepCtx(ctx, secondsOr(pr.InitialDelaySeconds, 0)); err != nil {
		return err
	}
	var fails int
	for {
		err := p.probeOnce(ctx, c, pr)
		if err == nil {
			return nil
		}
		p.mu.Lock()
		alive := p.running[c.Name]
		p.mu.Unlock()
		if alive != nil && !alive() {
			// The kubelet would restart it, into CrashLoopBackOff.
			return fmt.Errorf("container %s exited before its startupProbe passed (last probe: %v)", c.Name, err)
		}
		if fails++; fails >= pr.failures() {
			return fmt.Errorf("container %s: startupProbe failed %d times: %v", c.Name, fails, err)
		}
		if serr := sleepCtx(ctx, pr.period()); serr != nil {
			return fmt.Errorf("container %s: startupProbe not passed: %w (last probe: %v)", c.Name, serr, err)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// startProbes polls readiness and liveness as declared, until ctx ends.
func (p *pod) startProbes(ctx context.Context, c container) {
	key := c.Name
	p.mu.Lock()
	p.probes[key] = &probeState{ready: c.ReadinessProbe == nil, lastErr: "no readiness result yet"}
	p.mu.Unlock()
	if pr := c.ReadinessProbe; pr != nil {
		go p.pollProbe(ctx, c, pr, func(ok bool, err error) {
			p.mu.Lock()
			defer p.mu.Unlock()
			st := p.probes[key]
			st.ready = ok
			if err != nil {
				st.lastErr = err.Error()
			}
		})
	}
	if pr := c.LivenessProbe; pr != nil {
		go p.pollProbe(ctx, c, pr, func(ok bool, err error) {
			if !ok {
				p.mu.Lock()
				defer p.mu.Unlock()
				if !p.stopped {
					p.broken = append(p.broken, fmt.Sprintf("%s: livenessProbe failed %d times: %v (the kubelet would restart it)", c.Name, pr.failures(), err))
				}
			}
		})
	}
}

// pollProbe runs pr every period from initialDelay on and reports a
// result the way the kubelet flips it: success at once, failure after
// failureThreshold in a row.
func (p *pod) pollProbe(ctx context.Context, c container, pr *probe, report func(bool, error)) {
	if sleepCtx(ctx, secondsOr(pr.InitialDelaySeconds, 0)) != nil {
		return
	}
	fails := 0
	for {
		err := p.probeOnce(ctx, c, pr)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			p.mu.Lock()
			p.failed = append(p.failed, probeFailure{at: time.Now(), why: c.Name + ": " + err.Error()})
			p.mu.Unlock()
		}
		if err == nil {
			fails = 0
			report(true, nil)
		} else if fails++; fails >= pr.failures() {
			report(false, err)
		} else {
			// Below the threshold the previous result stands; keep the
			// reason for the report.
			p.mu.Lock()
			if st := p.probes[c.Name]; st != nil && !st.ready {
				st.lastErr = err.Error()
			}
			p.mu.Unlock()
		}
		if sleepCtx(ctx, pr.period()) != nil {
			return
		}
	}
}

// Ready is the Pod's Ready condition: every container (and native sidecar)
// running and passing its readiness probe. why says what is not.
func (p *pod) Ready() (ready bool, why string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var not []string
	for _, c := range slices.Concat(p.spec.InitContainers, p.spec.Containers) {
		if c.RestartPolicy != "Always" && slices.ContainsFunc(p.spec.InitContainers, func(ic container) bool { return ic.Name == c.Name }) {
			continue
		}
		alive, ok := p.running[c.Name]
		switch st := p.probes[c.Name]; {
		case !ok || st == nil:
			not = append(not, c.Name+": not started")
		case !alive():
			not = append(not, c.Name+": exited")
		case !st.ready:
			not = append(not, c.Name+": "+st.lastErr)
		}
	}
	return len(not) == 0, strings.Join(not, "; ")
}

// ProbeFailuresSince lists the probe runs that failed after since.
func (p *pod) ProbeFailuresSince(since time.Time) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, f := range p.failed {
		if f.at.After(since) {
			out = append(out, f.at.Format("15:04:05.000")+" "+f.why)
		}
	}
	return out
}

// Broken is what a kubelet would have restarted a container for.
func (p *pod) Broken() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.broken)
}

// WaitReady waits up to limit from the pod's start for the Ready condition.
func (p *pod) WaitReady(ctx context.Context, limit time.Duration) (time.Duration, error) {
	deadline := p.Started.Add(limit)
	for {
		if ok, _ := p.Ready(); ok {
			return time.Since(p.Started), nil
		}
		if b := p.Broken(); len(b) > 0 {
			return 0, fmt.Errorf("pod %s: %s", p.name, strings.Join(b, "; "))
		}
		if time.Now().After(deadline) {
			_, why := p.Ready()
			return 0, fmt.Errorf("pod %s not Ready %s after it started: %s", p.name, limit, why)
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return 0, err
		}
	}
}

// podOrderIDs are the SPIFFE IDs the ClusterSPIFFEID example gives the pods.
const (
	podOrderPostgresID = "/ns/demo/sa/postgres"
	podOrderBackendID  = "/ns/demo/sa/backend"
	// backendDNS is the backend entry's first DNS name, so its SVID's CN:
	// pg_ident.conf in the base maps it to role app.
	backendDNS = "backend.demo.svc.cluster.local"
)

// startPodOrderSPIRE starts SPIRE with entries for the pods' uids as the
// runner maps them: postgres (999 → the local postgres account) and the
// backend (10001), the latter with a DNS name as dnsNameTemplates gives.
func startPodOrderSPIRE(t *testing.T, workDir string) (*spire, podEnv) {
	binDir, pgU := requirePostgres(t)
	requireBridge(t)
	s := startSPIRE(t, workDir, spireEntry{Path: podOrderPostgresID, Selector: "unix:uid:" + uidString(pgU.UID)})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	mustRun(t, ctx, s.serverCmd("entry", "create", "-parentID", s.agentID().String(),
		"-spiffeID", s.ID(podOrderBackendID).String(), "-selector", "unix:uid:10001",
		"-dns", backendDNS, "-x509SVIDTTL", strconv.Itoa(x509SVIDTTL)))
	return s, podEnv{AgentSocket: s.AgentSocket, PGBinDir: binDir, PGUser: pgU}
}

// TestPodsRunInKubeletOrderAndStayReadyAcrossRotations runs the rendered
// base's PostgreSQL StatefulSet pod and backend Deployment pod as local
// processes in the kubelet's order (see the mapping above) against the real
// agent: both pods are Ready within 15 s of starting and stay Ready across
// ≥ 3 rotations; after each, PostgreSQL presents the certificate its folder
// holds, and a client with the backend pod's SVID as Envoy received it over
// SDS logs in as role app (its CN mapped by the base's pg_ident.conf).
// A manifest change that would break a real pod breaks the run: the
// sub-tests run mutated copies of the base and expect a pod never Ready.
func TestPodsRunInKubeletOrderAndStayReadyAcrossRotations(t *testing.T) {
	workDir := newWorkDir(t)
	s, env := startPodOrderSPIRE(t, workDir)
	kube, err := filepath.Abs("../deploy/kubernetes")
	if err != nil {
		t.Fatal(err)
	}
	runPodsAcrossRotations(t, s, env, workDir, "kustomize base", renderBase(t, filepath.Join(kube, "base")))
	if t.Failed() {
		return
	}

	// Mutations that would break a real pod break the run. The bridge's
	// probes are the sidecar component's, its config the workload's.
	for _, m := range []podMutation{
		{
			name: "readinessProbe path typo",
			file: "components/sidecar/sidecar.yaml", kind: "Deployment", obj: "backend",
			old:  "readinessProbe:\n            httpGet:\n              path: /readyz",
			new:  "readinessProbe:\n            httpGet:\n              path: /ready",
			want: "sds-bridge: GET /ready: 404",
		},
		{
			name: "credential folder mounted elsewhere in the wait init container",
			file: "base/postgres.yaml", kind: "StatefulSet", obj: "postgres",
			old:  "              mountPath: /spiffe-certs\n              readOnly: true\n      containers:",
			new:  "              mountPath: /spiffe-cert\n              readOnly: true\n      containers:",
			want: "init container wait-for-credentials",
		},
		{
			name: "admin port moved in the config, not in the probes",
			file: "base/backend.yaml", kind: "Deployment", obj: "backend",
			old:  "listen: 0.0.0.0:8081",
			new:  "listen: 0.0.0.0:8082",
			want: "container sds-bridge: startupProbe not passed",
		},
	} {
		t.Run(m.name, func(t *testing.T) { testPodMutation(t, env, kube, m) })
	}
}

// TestChartPodsRunInKubeletOrderAndStayReadyAcrossRotations is the test
// above for the Helm chart's default render (deploy/helm/sds-bridge, release
// namespace demo, as `helm install -n demo` renders it): its PostgreSQL and
// backend pods, with the bridge config, Envoy bootstrap, pg_ident.conf and
// probes the chart generates from its values, are Ready within 15 s and
// stay Ready across ≥ 3 rotations, PostgreSQL serving its folder's
// certificate and the backend's SDS certificate logging in as app.
func TestChartPodsRunInKubeletOrderAndStayReadyAcrossRotations(t *testing.T) {
	workDir := newWorkDir(t)
	s, env := startPodOrderSPIRE(t, workDir)
	runPodsAcrossRotations(t, s, env, workDir, "Helm chart", renderChart(t, "demo"))
}

// runPodsAcrossRotations runs the postgres StatefulSet pod and the backend
// Deployment pod of objs, waits until both are Ready (15 s at most), then
// watches them stay Ready, with no failed probe run, while PostgreSQL
// presents ≥ 3 new certificates of its folder to a client logging in with
// the backend's SDS certificate.
func runPodsAcrossRotations(t *testing.T, s *spire, env podEnv, workDir, what string, objs []k8sObject) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	pgPod, bePod := startPodsReady(t, ctx, workDir, what, objs, env)

	// Stays Ready: checked every 100 ms while rotations go by, and no
	// probe run may fail from now on.
	readySince := time.Now()
	watchCtx, stopWatch := context.WithCancel(ctx)
	notReady, watchWG := watchPodsReady(watchCtx, pgPod, bePod)

	pgFolder := folder{Dir: pgPod.vols["spiffe-certs"], Layout: layoutHelper, TD: s.TrustDomain}
	envoy := bePod.envoyOf(t)
	serverID := s.ID(podOrderPostgresID)
	var serials []string
	for len(serials) < 4 { // the first certificate and ≥ 3 rotations
		serial := podOrderServerMatchesFolder(t, ctx, pgFolder, pgPod, envoy, serverID, serials)
		serials = append(serials, serial)
		t.Logf("%s: rotation %d: PostgreSQL presents the folder's serial %s; the backend's SDS certificate logs in as app", what, len(serials)-1, serial)
		select {
		case why := <-notReady:
			t.Fatalf("a pod left Ready: %s", why)
		default:
		}
	}
	stopWatch()
	watchWG.Wait()
	select {
	case why := <-notReady:
		t.Fatalf("a pod left Ready: %s", why)
	default:
	}
	for _, pd := range []*pod{pgPod, bePod} {
		if f := pd.ProbeFailuresSince(readySince); len(f) > 0 {
			t.Errorf("pod %s: probe runs failed while Ready (%s): %s", pd.name, time.Since(readySince).Round(time.Second), strings.Join(f, "; "))
		}
	}
	t.Logf("%s: both pods Ready for %s, across %d rotations of PostgreSQL's certificate, no probe run failed", what, time.Since(readySince).Round(100*time.Millisecond), len(serials)-1)
}

// startPodsReady starts the postgres-0 and backend pods of objs and waits
// until both are Ready, 15 s at most each.
func startPodsReady(t *testing.T, ctx context.Context, workDir, what string, objs []k8sObject, env podEnv) (pgPod, bePod *pod) {
	t.Helper()
	pgObj, cms := podTemplate(t, objs, "StatefulSet", "postgres")
	pgPod = newPod(t, workDir, "postgres-0", pgObj, cms, env)
	beObj, _ := podTemplate(t, objs, "Deployment", "backend")
	bePod = newPod(t, workDir, "backend", beObj, cms, env)

	// One after the other (Run returns once a pod's containers are
	// started, a few seconds): the runner's helpers may end the test,
	// which only the test's goroutine may do.
	for _, pd := range []*pod{pgPod, bePod} {
		if err := pd.Run(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var readyIn [2]time.Duration
	var readyErr [2]error
	var wg sync.WaitGroup
	for i, pd := range []*pod{pgPod, bePod} {
		wg.Go(func() { readyIn[i], readyErr[i] = pd.WaitReady(ctx, 15*time.Second) })
	}
	wg.Wait()
	if err := errors.Join(readyErr[:]...); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: Pod Ready after start: postgres-0 %s, backend %s (limit 15s)", what, readyIn[0].Round(time.Millisecond), readyIn[1].Round(time.Millisecond))
	return pgPod, bePod
}

// watchPodsReady checks the pods every 100 ms until ctx ends and reports
// the first time one is not Ready or broken.
func watchPodsReady(ctx context.Context, pods ...*pod) (<-chan string, *sync.WaitGroup) {
	notReady := make(chan string, 1)
	report := func(why string) {
		select {
		case notReady <- why:
		default:
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for sleepCtx(ctx, 100*time.Millisecond) == nil {
			for _, pd := range pods {
				if ok, why := pd.Ready(); !ok {
					report(pd.name + ": " + why)
				}
				if b := pd.Broken(); len(b) > 0 {
					report(pd.name + ": " + strings.Join(b, "; "))
				}
			}
		}
	})
	return notReady, &wg
}

// envoyOf is the Envoy stand-in of a pod.
func (p *pod) envoyOf(t testing.TB) *envoyProc {
	t.Helper()
	for _, c := range p.spec.Containers {
		if imageKind(c.Image) == "envoy" {
			p.mu.Lock()
			defer p.mu.Unlock()
			if e, ok := p.envoys[c.Name]; ok {
				return e
			}
		}
	}
	t.Fatalf("e2e: pod %s runs no Envoy", p.name)
	return nil
}

// podOrderServerMatchesFolder waits until PostgreSQL presents the
// certificate its folder holds, other than those already seen, over a
// connection that logs in as app with the backend's SDS certificate.
func podOrderServerMatchesFolder(t *testing.T, ctx context.Context, f folder, pg *pod, envoy *envoyProc, serverID fmt.Stringer, seen []string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var last string
	for {
		before, err := f.Leaf()
		if err != nil {
			t.Fatal(err)
		}
		serial, err := connectAsApp(ctx, pg.port(5432), envoy, serverID.String())
		if err != nil {
			t.Fatalf("the backend's client cannot log in: %v", err)
		}
		after, err := f.Leaf()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(seen, serial.String()) && before.SerialNumber.Cmp(after.SerialNumber) == 0 && before.SerialNumber.Cmp(serial) == 0 {
			return serial.String()
		}
		last = fmt.Sprintf("server serial %s, folder %s then %s", serial, before.SerialNumber, after.SerialNumber)
		if sleepCtx(ctx, 200*time.Millisecond) != nil {
			t.Fatalf("PostgreSQL never presented a new certificate of its folder (seen %v): last %s", seen, last)
		}
	}
}

// connectAsApp logs in to PostgreSQL as role app, database app, with the
// certificate and bundle Envoy holds from SDS, verifying the server's SVID
// and ID; it returns the server certificate's serial.
func connectAsApp(ctx context.Context, port int, envoy *envoyProc, serverID string) (*big.Int, error) {
	st := envoy.Client.Latest()
	certSecret, vcSecret := st.Secrets["default"], st.Secrets["ALL"]
	if certSecret == nil || vcSecret == nil {
		return nil, fmt.Errorf("Envoy holds %v, not default and ALL", sortedKeys(st.Secrets))
	}
	cert, err := tlsCertificate(certSecret)
	if err != nil {
		return nil, err
	}
	td := cert.Leaf.URIs[0].Host
	trust, err := trustFromSecret(vcSecret, spiffeid.RequireTrustDomainFromString(td))
	if err != nil {
		return nil, err
	}
	var serial *big.Int
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=127.0.0.1 port=%d user=app dbname=app sslmode=require connect_timeout=10", port))
	if err != nil {
		return nil, err
	}
	cfg.Fallbacks = nil
	cfg.TLSConfig = &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		// SVIDs carry no DNS name to check: verify the chain and the
		// SPIFFE ID instead, as go-spiffe's AuthorizeID does.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			id, chains, err := x509svid.ParseAndVerify(raw, trust)
			if err != nil {
				return err
			}
			if id.String() != serverID {
				return fmt.Errorf("server is %s, want %s", id, serverID)
			}
			serial = chains[0][0].SerialNumber
			return nil
		},
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	var user string
	if err := conn.QueryRow(ctx, "SELECT current_user").Scan(&user); err != nil {
		return nil, err
	}
	if user != "app" {
		return nil, fmt.Errorf("logged in as %q, want app", user)
	}
	return serial, nil
}

// podMutation is one change to a copy of deploy/kubernetes.
type podMutation struct {
	name, file, kind, obj, old, new string // file: relative to deploy/kubernetes
	want                            string // in the reason the pod is not Ready
}

// testPodMutation runs the pod of a mutated copy of the base (and the
// sidecar component it uses) and expects it never to turn Ready within 15 s.
func testPodMutation(t *testing.T, env podEnv, kube string, m podMutation) {
	root := filepath.Join(newWorkDir(t), "kubernetes")
	for _, d := range []string{"base", "components"} {
		if err := os.CopyFS(filepath.Join(root, d), os.DirFS(filepath.Join(kube, d))); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(root, "base")
	path := filepath.Join(root, m.file)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(string(raw), m.old) != 1 {
		t.Fatalf("mutation %q: %q occurs %d times in %s, want once", m.name, m.old, strings.Count(string(raw), m.old), m.file)
	}
	writeFile(t, path, []byte(strings.Replace(string(raw), m.old, m.new, 1)), 0o644, nil)
	obj, cms := podTemplate(t, renderBase(t, dir), m.kind, m.obj)
	// What the kubelet does after 15 s does not matter here: the pod
	// missed the limit the unchanged base meets. (A bit longer, so that
	// WaitReady's own limit says why.)
	ctx, cancel := context.WithTimeout(t.Context(), 16*time.Second)
	defer cancel()
	pd := newPod(t, root, m.obj, obj, cms, env)
	err = pd.Run(ctx)
	if err == nil {
		_, err = pd.WaitReady(ctx, 15*time.Second)
	}
	if err == nil {
		t.Fatalf("mutation %q: pod %s Ready after %s: the run did not notice", m.name, m.obj, time.Since(pd.Started).Round(time.Millisecond))
	}
	// Not Ready for the reason the mutation gives, not any other: a run
	// broken by something else would prove nothing.
	if !strings.Contains(err.Error(), m.want) {
		t.Fatalf("mutation %q: pod %s not Ready, but not for the expected reason (%q): %v", m.name, m.obj, m.want, err)
	}
	t.Logf("mutation %q breaks the pod as it would in a cluster: %v", m.name, err)
}
