// Package envoy_test checks the Envoy bootstraps shipped in configs/envoy
// and the example bridge config beside them.
package envoy_test

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/proto"

	"github.com/sds-bridge/sds-bridge/internal/config"
	"github.com/sds-bridge/sds-bridge/internal/envoyboot"
)

const exampleConfig = "../sds-bridge.example.yaml"

// bootstraps lists every YAML file in this folder, so a new one is checked
// without anyone adding it here.
func bootstraps(t *testing.T) []string {
	t.Helper()
	var files []string
	for _, pattern := range []string{"*.yaml", "*.yml"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) == 0 {
		t.Fatal("configs/envoy holds no YAML file: the bootstraps are gone")
	}
	return files
}

// Every bootstrap passes the strict validator and asks only for names the
// bridge serves with its default config.
func TestEveryBootstrapValidates(t *testing.T) {
	for _, f := range bootstraps(t) {
		t.Run(f, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if err := envoyboot.Validate(data, envoyboot.DefaultNames()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Every bootstrap starts with a comment block that says what it is for and
// names each secret it asks for and the socket it uses.
func TestEveryBootstrapExplainsItself(t *testing.T) {
	for _, f := range bootstraps(t) {
		t.Run(f, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var head []string
			for _, l := range strings.Split(string(data), "\n") {
				if !strings.HasPrefix(l, "#") {
					break
				}
				head = append(head, l)
			}
			if len(head) < 5 {
				t.Fatalf("the file should open with a comment block (what it is for, which names it needs, which socket); it has %d comment lines", len(head))
			}
			block := strings.Join(head, "\n")
			b, err := envoyboot.Parse(data)
			if err != nil {
				t.Fatal(err)
			}
			sock, err := envoyboot.BridgeSocket(b)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range append(envoyboot.SecretNames(b), sock, filepath.Base(f)) {
				if !strings.Contains(block, want) {
					t.Errorf("the comment block does not mention %q", want)
				}
			}
		})
	}
}

// The shipped bootstraps are what `sds-bridge envoy-bootstrap` prints for
// the same choices (comments aside), so the two never drift apart.
func TestBootstrapsMatchTheGenerator(t *testing.T) {
	inbound := []string{"spiffe://example.org/ns/demo/sa/frontend"}
	for file, o := range map[string]envoyboot.Options{
		"sidecar-inbound.yaml":        {Mode: envoyboot.ModeInbound, AllowedSPIFFEIDs: inbound},
		"sidecar-inbound-ads.yaml":    {Mode: envoyboot.ModeInbound, Transport: envoyboot.TransportADS, AllowedSPIFFEIDs: inbound},
		"sidecar-outbound.yaml":       outbound(envoyboot.TransportSotW),
		"sidecar-outbound-delta.yaml": outbound(envoyboot.TransportDelta),
	} {
		t.Run(file, func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			got, err := envoyboot.Parse(data)
			if err != nil {
				t.Fatal(err)
			}
			want, err := envoyboot.Build(o)
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, want) {
				gen, _ := envoyboot.Generate(o)
				t.Errorf("%s differs from the generator's output for the same options; regenerate it and keep the comments:\n%s", file, gen)
			}
		})
	}
}

func outbound(tr envoyboot.Transport) envoyboot.Options {
	return envoyboot.Options{
		Mode: envoyboot.ModeOutbound, Transport: tr,
		UpstreamAddress: "backend.demo.svc.cluster.local", UpstreamPort: 8443,
		UpstreamSPIFFEID: "spiffe://example.org/ns/demo/sa/backend",
	}
}

// The folder holds an ADS and a DELTA_GRPC variant: the bridge serves both.
func TestBootstrapsCoverEveryTransport(t *testing.T) {
	seen := map[string]bool{}
	for _, f := range bootstraps(t) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		s := string(data)
		switch {
		case strings.Contains(s, "ads_config:"):
			seen["ads"] = true
		case strings.Contains(s, "api_type: DELTA_GRPC"):
			seen["delta"] = true
		case strings.Contains(s, "api_type: GRPC"):
			seen["sotw"] = true
		}
	}
	for _, tr := range []string{"sotw", "delta", "ads"} {
		if !seen[tr] {
			t.Errorf("no bootstrap uses %s", tr)
		}
	}
}

// The example config loads with the bridge's own loader, and the shipped
// bootstraps work with it.
func TestExampleConfigLoads(t *testing.T) {
	c, err := config.Load(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	if got := envoyboot.NamesFromConfig(c); got != envoyboot.DefaultNames() {
		t.Errorf("example names %+v differ from the defaults %+v the bootstraps use", got, envoyboot.DefaultNames())
	}
	for _, f := range bootstraps(t) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b, err := envoyboot.Parse(data)
		if err != nil {
			t.Fatal(err)
		}
		if sock, err := envoyboot.BridgeSocket(b); err != nil || sock != c.SDS.SocketPath {
			t.Errorf("%s: bridge socket %q (%v), example config sds.socket %q", f, sock, err, c.SDS.SocketPath)
		}
	}
}

// The example shows every key config.Config has: a key added to the config
// without a line here fails this test.
func TestExampleConfigNamesEveryKey(t *testing.T) {
	data, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	nodeKeys(&doc, "", have)
	var want []string
	typeKeys(reflect.TypeFor[config.Config](), "", &want)
	if len(want) < 10 {
		t.Fatalf("found only %d keys in config.Config: %q", len(want), want)
	}
	for _, k := range want {
		if !have[k] {
			t.Errorf("%s does not show key %s", exampleConfig, k)
		}
	}
	for k := range have {
		if !slices.Contains(want, k) {
			t.Errorf("%s shows %s, which config.Config does not have", exampleConfig, k)
		}
	}
}

func typeKeys(t reflect.Type, prefix string, out *[]string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return
	}
	for f := range t.Fields() {
		tag, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if opts == "inline" {
			typeKeys(f.Type, prefix, out)
			continue
		}
		if tag == "" || tag == "-" {
			continue
		}
		key := prefix + tag
		*out = append(*out, key)
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
			typeKeys(ft.Elem(), key+"[].", out)
		} else {
			typeKeys(ft, key+".", out)
		}
	}
}

func nodeKeys(n *yaml.Node, prefix string, out map[string]bool) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			nodeKeys(c, prefix, out)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := prefix + n.Content[i].Value
			out[key] = true
			nodeKeys(n.Content[i+1], key+".", out)
		}
	case yaml.SequenceNode:
		for _, c := range n.Content {
			nodeKeys(c, strings.TrimSuffix(prefix, ".")+"[].", out)
		}
	}
}
