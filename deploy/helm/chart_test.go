// Package helm_test checks what the sds-bridge chart renders with the
// bridge's own code: every bridge config a value set produces loads with
// the bridge's parse/default/validate, and every Envoy bootstrap is valid
// against Envoy's protos, asks only for names that bridge serves, points at
// its socket, and names peers of the release's trust domain and namespace.
// Helm stays in helmtest (a module of its own): the chart is rendered by
// its cmd/render, as the e2e suite does.
package helm_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/prototext"

	"github.com/sds-bridge/sds-bridge/internal/config"
	"github.com/sds-bridge/sds-bridge/internal/envoyboot"
)

// renderChart renders deploy/helm/sds-bridge with helmtest's cmd/render
// and returns each ConfigMap's data by name.
func renderChart(t *testing.T, namespace string, args ...string) map[string]map[string]string {
	t.Helper()
	args = append([]string{"run", "./cmd/render", "-namespace", namespace}, args...)
	cmd := exec.Command("go", append(args, "../sds-bridge")...)
	cmd.Dir = "helmtest"
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("render the chart %v: %v\n%s", args, err, stderr.String())
	}
	cms := map[string]map[string]string{}
	dec := yaml.NewDecoder(bytes.NewReader(out))
	for {
		var o struct {
			Kind     string `yaml:"kind"`
			Metadata struct {
				Name string `yaml:"name"`
			} `yaml:"metadata"`
			Data map[string]string `yaml:"data"`
		}
		if err := dec.Decode(&o); errors.Is(err, io.EOF) {
			return cms
		} else if err != nil {
			t.Fatal(err)
		}
		if o.Kind == "ConfigMap" {
			cms[o.Metadata.Name] = o.Data
		}
	}
}

// TestChartConfigsLoadAndBootstrapsFitTheirBridge: for the default values
// and each value set in helmtest/testdata, every bridge config loads, and
// every Envoy bootstrap fits the bridge of its pod (valid, served names,
// the bridge's socket) and names only SPIFFE IDs of the release's trust
// domain and namespace.
func TestChartConfigsLoadAndBootstrapsFitTheirBridge(t *testing.T) {
	sets, err := filepath.Glob("helmtest/testdata/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	sets = append([]string{""}, sets...)
	for _, set := range sets {
		name := "default"
		if set != "" {
			name = filepath.Base(set)
		}
		t.Run(name, func(t *testing.T) {
			var args []string
			if set != "" {
				abs, err := filepath.Abs(set)
				if err != nil {
					t.Fatal(err)
				}
				args = []string{"-f", abs}
			}
			td := "example.org"
			if strings.Contains(set, "other-trust-domain") {
				td = "prod.example.com"
			}
			checkRender(t, renderChart(t, "payments", args...), "spiffe://"+td+"/ns/payments/sa/")
		})
	}
}

func checkRender(t *testing.T, cms map[string]map[string]string, idPrefix string) {
	bridges, envoys := 0, 0
	for name, data := range cms {
		workload, ok := strings.CutSuffix(name, "-sds-bridge")
		if !ok {
			continue
		}
		bridges++
		cfg := loadConfig(t, name, data["config.yaml"])
		env, ok := cms[workload+"-envoy"]
		if cfg.SDS.On() != ok {
			t.Errorf("%s: sds.enabled is %v, and an Envoy bootstrap for the pod exists: %v", name, cfg.SDS.On(), ok)
		}
		if !ok {
			continue
		}
		envoys++
		b, err := envoyboot.Parse([]byte(env["envoy.yaml"]))
		if err == nil {
			err = envoyboot.Check(b, envoyboot.NamesFromConfig(cfg))
		}
		if err != nil {
			t.Errorf("%s-envoy: %v", workload, err)
			continue
		}
		if sock, err := envoyboot.BridgeSocket(b); err != nil || sock != cfg.SDS.SocketPath {
			t.Errorf("%s-envoy: the bridge socket is %q (%v), the bridge's sds.socket %s", workload, sock, err, cfg.SDS.SocketPath)
		}
		ids := spiffeIDsIn(prototext.Format(b))
		if len(ids) == 0 {
			t.Errorf("%s-envoy names no peer", workload)
		}
		for _, id := range ids {
			if !strings.HasPrefix(id, idPrefix) {
				t.Errorf("%s-envoy names %s, want an ID under %s", workload, id, idPrefix)
			}
		}
	}
	if bridges == 0 {
		t.Fatal("no bridge config rendered")
	}
	t.Logf("%d bridge configs load, %d Envoy bootstraps fit their bridge", bridges, envoys)
}

// loadConfig is config.Load without the file: parse, default, validate.
func loadConfig(t *testing.T, name, data string) *config.Config {
	t.Helper()
	cfg, err := config.Parse(strings.NewReader(data))
	if err == nil {
		cfg.Default()
		err = cfg.Validate()
	}
	if err != nil {
		t.Fatalf("ConfigMap %s: config.yaml: %v", name, err)
	}
	return cfg
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
