package sds

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/sds-bridge/sds-bridge/rotation"
)

// fuzzFixture is one Server with one applied Update, shared by every input
// a fuzz worker runs.
type fuzzFixture struct {
	s      *Server
	u      *rotation.Update
	served map[string]*tlsv3.Secret
}

var (
	fuzzOnce sync.Once
	fuzzFix  fuzzFixture
)

func fixture(t testing.TB) fuzzFixture {
	fuzzOnce.Do(func() {
		exampleCA, otherCA := newCA(t, exampleTD), newCA(t, otherTD)
		u := newUpdate(1, []*x509svid.SVID{issue(t, exampleCA, webID), issue(t, exampleCA, backendID)},
			exampleCA.Bundle(), otherCA.Bundle())
		// Not served on a socket: the fuzz drives the stream's request
		// path and FetchSecrets directly, which is what a request meets
		// after the peer check.
		s, err := New(Config{SocketPath: "/unused", Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Apply(context.Background(), u); err != nil {
			t.Fatal(err)
		}
		served, _ := s.Secrets()
		fuzzFix = fuzzFixture{s: s, u: u, served: served}
	})
	return fuzzFix
}

// FuzzFetch sends arbitrary resource names (one per line) and node ids
// through the request path — a stream's requests and the unary
// FetchSecrets — and checks the answer: exactly the requested names that
// are served (all for none or "*"), equal to what BuildSecrets built, or
// NotFound with a bounded message when none is served.
func FuzzFetch(f *testing.F) {
	f.Add("default\nROOTCA", "envoy")
	f.Add("", "")
	f.Add("*", "\x00")
	f.Add("ALL\nnope\nspiffe://example.org/web\nspiffe://other.org\n\ndefault\ndefault", strings.Repeat("n", 1000))
	f.Add("spiffe://example.org/ghost\nspiffe://EXAMPLE.org\n\xff", "node")
	f.Fuzz(func(t *testing.T, list, node string) {
		fx := fixture(t)
		var names []string
		if list != "" {
			names = strings.Split(list, "\n")
		}

		// The stream path: open, subscribe (SotW and Delta), close.
		s := fx.s
		req := &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: node}, ResourceNames: names, TypeUrl: resource.SecretType}
		if st, err := s.open(nil, false, 0); err != nil {
			t.Errorf("open: %v", err)
		} else {
			if _, err := st.takeSotw(req, secretType); err != nil {
				t.Errorf("SotW request: %v", err)
			}
			s.close(st)
		}
		if st, err := s.open(nil, true, 0); err != nil {
			t.Errorf("open: %v", err)
		} else {
			if _, err := st.takeDelta(&discoveryv3.DeltaDiscoveryRequest{Node: req.GetNode(), ResourceNamesSubscribe: names,
				ResourceNamesUnsubscribe: names[:len(names)/2], TypeUrl: resource.SecretType}, secretType); err != nil {
				t.Errorf("Delta request: %v", err)
			}
			s.close(st)
		}
		s.reg.mu.Lock()
		if len(s.reg.peers) != 0 {
			t.Errorf("closed streams still count against their peer: %+v", *s.reg.peers[0])
		}
		s.reg.mu.Unlock()

		// The unary path.
		want := map[string]bool{}
		for _, n := range requestedNames(names) {
			if _, ok := fx.served[n]; ok {
				want[n] = true
			}
		}
		if len(requestedNames(names)) == 0 {
			for n := range fx.served {
				want[n] = true
			}
		}
		resp, err := (&discovery{s: fx.s}).FetchSecrets(t.Context(), proto.Clone(req).(*discoveryv3.DiscoveryRequest))
		if len(want) == 0 {
			if status.Code(err) != codes.NotFound || len(err.Error()) > 4<<10 {
				t.Fatalf("nothing served asked for: %v, want a short NotFound", err)
			}
			return
		}
		if err != nil {
			t.Fatalf("FetchSecrets(%q) = %v", names, err)
		}
		if resp.GetVersionInfo() != fx.s.versionOf(1) || resp.GetTypeUrl() != resource.SecretType {
			t.Errorf("version %q type %q", resp.GetVersionInfo(), resp.GetTypeUrl())
		}
		got := map[string]bool{}
		for _, a := range resp.GetResources() {
			sec := &tlsv3.Secret{}
			if err := a.UnmarshalTo(sec); err != nil {
				t.Fatal(err)
			}
			if got[sec.GetName()] {
				t.Errorf("secret %q sent twice", sec.GetName())
			}
			got[sec.GetName()] = true
			if !proto.Equal(sec, fx.served[sec.GetName()]) {
				t.Errorf("secret %q differs from the one built", sec.GetName())
			}
		}
		if !maps.Equal(got, want) {
			t.Errorf("asked %q: got %v, want %v", names, slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
		}
	})
}

// FuzzBuildSecrets builds the Secrets of a fixed Update under arbitrary
// configured names: either Names refuses them, or every Secret is one
// Envoy accepts, keyed by its own name, with ALL only under the SPIFFE
// validator.
func FuzzBuildSecrets(f *testing.F) {
	f.Add("default", "ROOTCA", "ALL", false)
	f.Add("svid", "bundle", "everything", true)
	f.Add("", "", "", false)
	f.Add("spiffe://example.org/web", "x", "y", false)
	f.Add("*", "x\x00", "\xff", true)
	f.Fuzz(func(t *testing.T, svid, bundle, all string, disable bool) {
		fx := fixture(t)
		names := Names{DefaultSVID: svid, DefaultBundle: bundle, AllBundles: all, DisableSPIFFECertValidation: disable}
		secrets, err := BuildSecrets(fx.u, names)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "names: ") {
				t.Fatalf("BuildSecrets: %v", err)
			}
			return
		}
		n := names.WithDefaults()
		for name, sec := range secrets {
			if sec.GetName() != name {
				t.Errorf("secret keyed %q is named %q", name, sec.GetName())
			}
			if err := sec.ValidateAll(); err != nil {
				t.Errorf("secret %q: %v", name, err)
			}
			if _, err := proto.Marshal(sec); err != nil {
				t.Errorf("secret %q cannot be sent: %v", name, err)
			}
		}
		if _, ok := secrets[n.AllBundles]; ok == disable {
			t.Errorf("ALL (%q) served: %t with DisableSPIFFECertValidation %t", n.AllBundles, ok, disable)
		}
		for _, want := range []string{n.DefaultSVID, n.DefaultBundle, webID.String(), backendID.String(), exampleTD.IDString(), otherTD.IDString()} {
			if _, ok := secrets[want]; !ok {
				t.Errorf("secret %q missing", want)
			}
		}
		for _, name := range []string{n.DefaultSVID, n.DefaultBundle, n.AllBundles} {
			if strings.HasPrefix(strings.ToLower(name), "spiffe://") || name == "*" {
				t.Errorf("configured name %q collides with SPIFFE names or the wildcard", name)
			}
		}
	})
}
