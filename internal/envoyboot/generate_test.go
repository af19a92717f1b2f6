package envoyboot

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ from Generate's output")

var (
	modes      = []Mode{ModeInbound, ModeOutbound}
	transports = []Transport{TransportSotW, TransportDelta, TransportADS}
)

// exampleOptions are the options of the golden files: the CLI's defaults
// plus the flags each mode requires.
func exampleOptions(m Mode, tr Transport) Options {
	o := Options{Mode: m, Transport: tr}
	switch m {
	case ModeInbound:
		o.AllowedSPIFFEIDs = []string{"spiffe://example.org/ns/demo/sa/frontend"}
	case ModeOutbound:
		o.UpstreamAddress, o.UpstreamPort = "backend.demo.svc.cluster.local", 8443
		o.UpstreamSPIFFEID = "spiffe://example.org/ns/demo/sa/backend"
	}
	return o
}

func TestGenerateValidatesInEveryCombination(t *testing.T) {
	for _, m := range modes {
		for _, tr := range transports {
			t.Run(string(m)+"-"+string(tr), func(t *testing.T) {
				y, err := Generate(exampleOptions(m, tr))
				if err != nil {
					t.Fatal(err)
				}
				if err := Validate(y, DefaultNames()); err != nil {
					t.Fatalf("generated bootstrap does not validate: %v\n%s", err, y)
				}
				// The YAML reads back as exactly the proto it came from.
				want, err := Build(exampleOptions(m, tr))
				if err != nil {
					t.Fatal(err)
				}
				got, err := Parse(y)
				if err != nil {
					t.Fatal(err)
				}
				if !proto.Equal(got, want) {
					t.Errorf("Parse(Generate(o)) differs from Build(o)")
				}
			})
		}
	}
}

func TestGenerateGolden(t *testing.T) {
	for _, m := range modes {
		for _, tr := range transports {
			name := string(m) + "-" + string(tr) + ".yaml"
			t.Run(name, func(t *testing.T) {
				got, err := Generate(exampleOptions(m, tr))
				if err != nil {
					t.Fatal(err)
				}
				path := filepath.Join("testdata", name)
				if *update {
					if err := os.MkdirAll("testdata", 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(path, got, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(path)
				if err != nil {
					t.Fatalf("%v (run: go test ./internal/envoyboot -run TestGenerateGolden -update)", err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("Generate output differs from %s; if the change is intended, run go test ./internal/envoyboot -run TestGenerateGolden -update and review the diff\n--- got\n%s", path, got)
				}
			})
		}
	}
}

// The output must not depend on anything but the options (map order,
// protojson's randomised spacing).
func TestGenerateIsStable(t *testing.T) {
	first, err := Generate(exampleOptions(ModeOutbound, TransportADS))
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		again, err := Generate(exampleOptions(ModeOutbound, TransportADS))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(first, again) {
			t.Fatalf("two runs differ:\n%s\n---\n%s", first, again)
		}
	}
}

func TestGenerateUsesTheGivenNamesAndSocket(t *testing.T) {
	names := ServedNames{SVID: "svid", Bundle: "bundle", AllBundles: "every-bundle"}
	o := exampleOptions(ModeInbound, TransportDelta)
	o.Names = names
	o.SDSSocket = "/var/run/bridge/s.sock"
	y, err := Generate(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := Validate(y, names); err != nil {
		t.Fatalf("does not validate with its own names: %v", err)
	}
	if err := Validate(y, DefaultNames()); err == nil || !strings.Contains(err.Error(), `secret "svid"`) {
		t.Errorf("validates against the default names; want secret \"svid\" refused, got %v", err)
	}
	for _, want := range []string{"path: /var/run/bridge/s.sock", "api_type: DELTA_GRPC", "name: every-bundle"} {
		if !strings.Contains(string(y), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	b, err := Parse(y)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := BridgeSocket(b); err != nil || got != "/var/run/bridge/s.sock" {
		t.Errorf("BridgeSocket = %q, %v", got, err)
	}
}

func TestGenerateInitialFetchTimeout(t *testing.T) {
	for _, tc := range []struct {
		in   time.Duration
		want string
	}{
		{0, "initial_fetch_timeout: 10s"},
		{3 * time.Second, "initial_fetch_timeout: 3s"},
		{-1, "initial_fetch_timeout: 0s"},
	} {
		o := exampleOptions(ModeOutbound, TransportSotW)
		o.InitialFetchTimeout = tc.in
		y, err := Generate(o)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(string(y), tc.want); n != 2 {
			t.Errorf("InitialFetchTimeout %v: %q appears %d times, want 2 (certificate and validation context)", tc.in, tc.want, n)
		}
	}
}

func TestGenerateBareTrustDomainIsAPrefix(t *testing.T) {
	o := exampleOptions(ModeInbound, TransportSotW)
	o.AllowedSPIFFEIDs = []string{"spiffe://partner.example"}
	y, err := Generate(o)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(y), "prefix: spiffe://partner.example/") {
		t.Errorf("a trust domain should become a URI SAN prefix match:\n%s", y)
	}
}

func TestGenerateRefusesBadOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"no mode", func(o *Options) { o.Mode = "" }, `mode ""`},
		{"bad transport", func(o *Options) { o.Transport = "rest" }, `transport "rest"`},
		{"relative socket", func(o *Options) { o.SDSSocket = "sds.sock" }, "absolute path"},
		{"no allowed peers", func(o *Options) { o.AllowedSPIFFEIDs = nil }, "at least one allowed peer"},
		{"bad peer", func(o *Options) { o.AllowedSPIFFEIDs = []string{"example.org/frontend"} }, `allowed SPIFFE ID "example.org/frontend"`},
		{"listen on a name", func(o *Options) { o.ListenAddress = "localhost" }, "not an IP address"},
		{"port too big", func(o *Options) { o.ListenPort = 70000 }, "listen port 70000"},
		{"outbound without upstream", func(o *Options) { o.Mode = ModeOutbound; o.UpstreamSPIFFEID = "spiffe://example.org/x" }, "upstream address and port are required"},
		{"outbound without upstream id", func(o *Options) { o.Mode = ModeOutbound; o.UpstreamAddress, o.UpstreamPort = "b", 1 }, "upstream's SPIFFE ID is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := exampleOptions(ModeInbound, TransportSotW)
			tc.edit(&o)
			_, err := Generate(o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestSplitHostPort(t *testing.T) {
	for _, tc := range []struct {
		in   string
		host string
		port uint32
		ok   bool
	}{
		{"backend:8443", "backend", 8443, true},
		{"[::1]:443", "::1", 443, true},
		{"backend", "", 0, false},
		{":8443", "", 0, false},
		{"backend:0", "", 0, false},
		{"backend:70000", "", 0, false},
	} {
		h, p, err := SplitHostPort(tc.in)
		if (err == nil) != tc.ok || h != tc.host || p != tc.port {
			t.Errorf("SplitHostPort(%q) = %q, %d, %v", tc.in, h, p, err)
		}
	}
}
