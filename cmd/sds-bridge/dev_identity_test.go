package main

import (
	"context"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// dev --second-spiffe-id --federate-with lets every multi-SVID and
// federation feature be tried without SPIRE.
func TestDevIssuesASecondSVIDAndAFederatedBundle(t *testing.T) {
	dir := testkit.ShortDir(t)
	second, plainDir, sock := filepath.Join(dir, "second"), filepath.Join(dir, "plain"), filepath.Join(dir, "sds.sock")
	conf := filepath.Join(dir, "bridge.yaml")
	if err := os.WriteFile(conf, []byte(`files:
  - dir: `+second+`
    svid: second
    include_federated_domains: true
  - dir: `+plainDir+`
    layout: spiffe
`), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDev(t, dir, "--config", conf, "--admin", "", "--sds-socket", sock,
		"--second-spiffe-id", "spiffe://example.org/second", "--federate-with", "partner.test")

	holds := func(cfg filesink.InspectConfig, want string) {
		t.Helper()
		testkit.Eventually(t, cfg.Dir+" holding "+want, func() bool {
			m, err := filesink.Inspect(cfg)
			return err == nil && m.SPIFFEID.String() == want
		})
	}
	holds(filesink.InspectConfig{Dir: second}, "spiffe://example.org/second")
	holds(filesink.InspectConfig{Dir: plainDir, Names: filesink.Names{Layout: filesink.LayoutSPIFFE}}, "spiffe://example.org/dev")
	for _, f := range []string{filepath.Join(second, "federated", "partner.test.pem"), filepath.Join(plainDir, "partner.test.spiffe-trust-bundle.pem")} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("federated bundle file: %v", err)
		}
	}
	if out := d.stdout.String(); !strings.Contains(out, `spiffe://example.org/second  (hint "second")`) || !strings.Contains(out, "spiffe://partner.test") {
		t.Errorf("dev's banner does not mention the second SVID and the federated bundle:\n%s", out)
	}

	ctx, cancel := context.WithTimeout(t.Context(), testkit.Timeout)
	defer cancel()
	names := []string{"default", "ALL", "spiffe://example.org/dev", "spiffe://example.org/second", "spiffe://partner.test"}
	// The folders and SDS are separate sinks: a folder holding the SVID
	// does not mean SDS has applied it yet.
	var resp *discoveryv3.DiscoveryResponse
	var err error
	testkit.Eventually(t, "SDS serving the first update", func() bool {
		resp, err = sdsClient(t, sock).FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{
			Node: &corev3.Node{Id: "test"}, ResourceNames: names, TypeUrl: resource.SecretType})
		return status.Code(err) != codes.Unavailable
	})
	if err != nil {
		t.Fatal(err)
	}
	secrets := secretsByName(t, resp, names)
	for name, want := range map[string]string{"default": "spiffe://example.org/dev", "spiffe://example.org/second": "spiffe://example.org/second"} {
		leaf := parseCerts(t, secrets[name].GetTlsCertificate().GetCertificateChain().GetInlineBytes())[0]
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != want {
			t.Errorf("SDS %q serves %v, want %s", name, leaf.URIs, want)
		}
	}
	if got := validationRoots(t, secrets["ALL"]); len(got) != 2 || got["example.org"] == nil || got["partner.test"] == nil {
		t.Errorf("ALL trusts %d trust domains, want example.org and partner.test", len(got))
	}
}

// A value dev's CA refuses is reported with the flag the user typed.
func TestDevRefusesBadIdentityFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--second-spiffe-id", "spiffe://other.org/x"}, `--second-spiffe-id "spiffe://other.org/x": not in trust domain "example.org"`},
		{[]string{"--second-spiffe-id", "spiffe://example.org/dev"}, `--second-spiffe-id "spiffe://example.org/dev": listed twice`},
		{[]string{"--second-spiffe-id", "not-an-id"}, `--second-spiffe-id "not-an-id"`},
		{[]string{"--federate-with", "example.org"}, `--federate-with "example.org": that is the own trust domain`},
		{[]string{"--federate-with", "Bad Domain"}, `"Bad Domain"`},
		{[]string{"--federate-with", "p.test", "--federate-with", "p.test"}, `--federate-with "p.test": listed twice`},
		{[]string{"--spiffe-id", "spiffe://other.org/x"}, `--spiffe-id "spiffe://other.org/x": not in trust domain`},
		{[]string{"--svid-ttl", "500ms"}, `--svid-ttl "500ms": must be at least 1s`},
		{[]string{"--svid-ttl", "0"}, `--svid-ttl "0s": must be at least 1s`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out syncBuffer
			err := run(t.Context(), append([]string{"dev"}, tc.args...), &out, &out)
			if err == nil || !strings.Contains(err.Error()+out.String(), tc.want) {
				t.Fatalf("dev %v: error %v (output %q), want one containing %q", tc.args, err, out.String(), tc.want)
			}
		})
	}
}
