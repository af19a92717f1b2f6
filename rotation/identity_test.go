package rotation_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/internal/devapi"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
	"github.com/sds-bridge/sds-bridge/rotation"
	"github.com/sds-bridge/sds-bridge/sds"
)

// TestTwoSVIDsAndAFederatedBundleReachBothSinks runs a fake Workload API
// serving two SVIDs and a federated bundle through the real source to the
// SDS server and three folders, one per way of choosing an SVID, then
// ends the federation.
func TestTwoSVIDsAndAFederatedBundleReachBothSinks(t *testing.T) {
	tmp := testkit.ShortDir(t)
	log := slog.New(slog.DiscardHandler)
	td := spiffeid.RequireTrustDomainFromString("example.org")
	fedTD := spiffeid.RequireTrustDomainFromString("partner.test")
	external, internal := spiffeid.RequireFromPath(td, "/external"), spiffeid.RequireFromPath(td, "/internal")
	own, err := devapi.NewCA(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	fed, err := devapi.NewCA(fedTD, time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	wl := devapi.NewServer(devapi.ServerConfig{SocketPath: filepath.Join(tmp, "wl.sock"), Logger: log})
	if err := wl.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(wl.Stop)
	// push sends both SVIDs in Workload API order (external first) and
	// returns them.
	push := func(federated ...*x509bundle.Bundle) (ext, in *x509svid.SVID) {
		t.Helper()
		var err error
		if ext, err = own.IssueWith(external, time.Hour, devapi.SVIDOptions{Hint: "external"}); err != nil {
			t.Fatal(err)
		}
		if in, err = own.IssueWith(internal, time.Hour, devapi.SVIDOptions{Hint: "internal"}); err != nil {
			t.Fatal(err)
		}
		resp, err := devapi.X509Response([]*x509svid.SVID{ext, in}, []*x509bundle.Bundle{own.Bundle()}, federated...)
		if err != nil {
			t.Fatal(err)
		}
		wl.SetX509(resp)
		return ext, in
	}

	sock := filepath.Join(tmp, "sds.sock")
	sdsServer, err := sds.New(sds.Config{SocketPath: sock, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	folders := map[string]*filesink.Folder{}
	for name, cfg := range map[string]filesink.Config{
		"default":    {IncludeFederatedDomains: true},
		"by-id":      {SVID: external.String(), Layout: filesink.LayoutSPIFFE},
		"by-hint":    {SVID: "external", IncludeFederatedDomains: true, FederatedBundle: filesink.FederatedConcatenate},
		"wrong-hint": {SVID: "nobody"},
	} {
		cfg.Dir, cfg.Logger = filepath.Join(tmp, name), log
		f, err := filesink.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Prepare(t.Context()); err != nil {
			t.Fatal(err)
		}
		folders[name] = f
	}
	sinks := []rotation.Sink{sdsServer}
	for _, f := range folders {
		sinks = append(sinks, f)
	}
	// The Workload API sends /external first; the hint makes /internal the default.
	src, err := rotation.New(rotation.Config{Address: wl.Address(), DefaultSVIDHint: "internal", Sinks: sinks, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served, ran := make(chan error, 1), make(chan error, 1)
	go func() { served <- sdsServer.Serve(ctx) }()
	go func() { ran <- src.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		for _, ch := range []chan error{served, ran} {
			if err := <-ch; err != nil {
				t.Error(err)
			}
		}
	})
	testkit.Eventually(t, "the SDS socket", func() bool { _, err := os.Stat(sock); return err == nil })
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	statusOf := func(f *filesink.Folder) rotation.SinkStatus {
		for _, st := range src.SinkStatuses() {
			if st.Name == f.Name() {
				return st
			}
		}
		return rotation.SinkStatus{}
	}
	settle := func(gen uint64) {
		t.Helper()
		for _, f := range folders {
			testkit.Eventually(t, fmt.Sprintf("%s to apply generation %d", f.Name(), gen), func() bool {
				st := statusOf(f)
				return st.Generation == gen || (st.Err != nil && st.Failures == gen)
			})
		}
	}
	holds := func(name string, want *x509svid.SVID, gen uint64) {
		t.Helper()
		m, err := filesink.Inspect(folders[name].InspectConfig(0))
		if err != nil {
			t.Fatalf("folder %s: %v", name, err)
		}
		if m.SPIFFEID != want.ID || m.Serial != want.Certificates[0].SerialNumber.Text(16) || m.Generation != gen {
			t.Errorf("folder %s holds %s serial %s generation %d, want %s serial %x generation %d",
				name, m.SPIFFEID, m.Serial, m.Generation, want.ID, want.Certificates[0].SerialNumber, gen)
		}
	}
	names := []string{"default", "ROOTCA", "ALL", external.String(), internal.String(), td.IDString(), fedTD.IDString()}

	// Generation 1: two SVIDs, one federated trust domain.
	ext, in := push(fed.Bundle())
	settle(1)
	holds("default", in, 1)
	holds("by-id", ext, 1)
	holds("by-hint", ext, 1)
	if st := statusOf(folders["wrong-hint"]); st.Err == nil || !strings.Contains(st.Err.Error(), `svid "nobody"`) {
		t.Errorf("folder wrong-hint status %+v, want an error naming the svid", st)
	}
	fedRoots := pemOf(fed.Root())
	fedFile := filepath.Join(tmp, "default", "federated", "partner.test.pem")
	if got, err := os.ReadFile(fedFile); err != nil || !bytes.Equal(got, fedRoots) {
		t.Errorf("%s = %v; want the federated roots", fedFile, err)
	}
	if got, err := os.ReadFile(filepath.Join(tmp, "default", "svid_bundle.pem")); err != nil || !bytes.Equal(got, pemOf(own.Root())) {
		t.Errorf("default folder's bundle file is not exactly the own roots (%v)", err)
	}
	if got, err := os.ReadFile(filepath.Join(tmp, "by-hint", "svid_bundle.pem")); err != nil || !bytes.Equal(got, append(pemOf(own.Root()), fedRoots...)) {
		t.Errorf("concatenating folder's bundle file is not own then federated roots (%v)", err)
	}
	spiffeFed := filepath.Join(tmp, "by-id", "partner.test.spiffe-trust-bundle.pem")
	if got, err := os.ReadFile(spiffeFed); err != nil || !bytes.Equal(got, fedRoots) {
		t.Errorf("%s = %v; want the federated roots", spiffeFed, err)
	}

	secrets := fetchSecrets(t, conn, names, 1)
	for name, want := range map[string]*x509svid.SVID{"default": in, external.String(): ext, internal.String(): in} {
		if got := leafOf(t, secrets[name]); got == nil || !got.Equal(want.Certificates[0]) {
			t.Errorf("SDS %q does not serve %s's leaf", name, want.ID)
		}
	}
	for name, want := range map[string][]string{
		"ROOTCA": {"example.org"}, td.IDString(): {"example.org"}, fedTD.IDString(): {"partner.test"}, "ALL": {"example.org", "partner.test"},
	} {
		if got := trustDomains(t, secrets[name]); !slices.Equal(got, want) {
			t.Errorf("SDS %q trusts %v, want %v", name, got, want)
		}
	}

	// Generation 2: the federation ends.
	ext, in = push()
	settle(2)
	holds("default", in, 2)
	holds("by-id", ext, 2)
	for _, gone := range []string{fedFile, spiffeFed} {
		if _, err := os.Stat(gone); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after the federation ended: %v", gone, err)
		}
	}
	if got, err := os.ReadFile(filepath.Join(tmp, "by-hint", "svid_bundle.pem")); err != nil || !bytes.Equal(got, pemOf(own.Root())) {
		t.Errorf("concatenating folder's bundle file still has federated roots (%v)", err)
	}
	secrets = fetchSecrets(t, conn, names, 2)
	if _, ok := secrets[fedTD.IDString()]; ok {
		t.Errorf("SDS still serves %s", fedTD.IDString())
	}
	if got := trustDomains(t, secrets["ALL"]); !slices.Equal(got, []string{"example.org"}) {
		t.Errorf("SDS ALL trusts %v after the federation ended", got)
	}
}

// fetchSecrets opens SDS streams until one answers with generation gen.
func fetchSecrets(t *testing.T, conn *grpc.ClientConn, names []string, gen uint64) map[string]*tlsv3.Secret {
	t.Helper()
	var out map[string]*tlsv3.Secret
	testkit.Eventually(t, fmt.Sprintf("SDS generation %d", gen), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), testkit.Timeout)
		defer cancel()
		stream, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "envoy"}, TypeUrl: resource.SecretType, ResourceNames: names}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(resp.GetVersionInfo(), fmt.Sprintf("-%d", gen)) {
			return false
		}
		out = map[string]*tlsv3.Secret{}
		for _, a := range resp.GetResources() {
			s := &tlsv3.Secret{}
			if err := a.UnmarshalTo(s); err != nil {
				t.Fatal(err)
			}
			out[s.GetName()] = s
		}
		return true
	})
	return out
}

func leafOf(t *testing.T, s *tlsv3.Secret) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(s.GetTlsCertificate().GetCertificateChain().GetInlineBytes())
	if b == nil {
		return nil
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// trustDomains lists the trust domains of a SPIFFE validator context.
func trustDomains(t *testing.T, s *tlsv3.Secret) []string {
	t.Helper()
	cfg := &tlsv3.SPIFFECertValidatorConfig{}
	if err := s.GetValidationContext().GetCustomValidatorConfig().GetTypedConfig().UnmarshalTo(cfg); err != nil {
		t.Fatalf("secret %q: %v", s.GetName(), err)
	}
	var out []string
	for _, td := range cfg.GetTrustDomains() {
		out = append(out, td.GetName())
	}
	return out
}

func pemOf(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}
