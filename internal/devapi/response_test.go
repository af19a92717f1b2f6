package devapi

import (
	"bytes"
	"crypto/x509"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

func TestX509ResponseEncodesLikeSPIRE(t *testing.T) {
	own, fed := newCA(t, "example.org"), newCA(t, "federated.test")
	svid := mustIssue(t, own, "/backend", SVIDOptions{Hint: "internal"})
	// A chain with an intermediate must arrive leaf first, concatenated.
	chained := &x509svid.SVID{ID: svid.ID, Certificates: []*x509.Certificate{svid.Certificates[0], own.Root()}, PrivateKey: svid.PrivateKey}
	// Two roots (a rotation in progress) are concatenated too.
	second := newCA(t, "example.org")
	ownBundle := x509bundle.FromX509Authorities(own.TrustDomain(), []*x509.Certificate{own.Root(), second.Root()})

	resp, err := X509Response([]*x509svid.SVID{svid, chained}, []*x509bundle.Bundle{ownBundle}, fed.Bundle())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Svids) != 2 {
		t.Fatalf("%d SVIDs, want 2", len(resp.Svids))
	}
	first := resp.Svids[0]
	if first.SpiffeId != "spiffe://example.org/backend" || first.Hint != "internal" {
		t.Errorf("first SVID %q hint %q", first.SpiffeId, first.Hint)
	}
	if !bytes.Equal(first.X509Svid, svid.Certificates[0].Raw) {
		t.Error("first SVID chain is not the leaf DER")
	}
	if want := append(append([]byte(nil), svid.Certificates[0].Raw...), own.Root().Raw...); !bytes.Equal(resp.Svids[1].X509Svid, want) {
		t.Error("chained SVID is not leaf DER followed by the intermediate DER")
	}
	if want := append(append([]byte(nil), own.Root().Raw...), second.Root().Raw...); !bytes.Equal(first.Bundle, want) {
		t.Error("own bundle is not the concatenated root DERs")
	}
	// The key must be PKCS#8 and belong to the leaf: go-spiffe's own parser
	// checks both.
	parsed, err := x509svid.ParseRaw(first.X509Svid, first.X509SvidKey)
	if err != nil {
		t.Fatalf("go-spiffe cannot parse the encoded SVID: %v", err)
	}
	if parsed.ID != svid.ID {
		t.Errorf("parsed ID %s, want %s", parsed.ID, svid.ID)
	}
	if got := resp.FederatedBundles["spiffe://federated.test"]; !bytes.Equal(got, fed.Root().Raw) {
		t.Errorf("federated bundle for spiffe://federated.test = %d bytes, want the root DER", len(got))
	}
	if len(resp.FederatedBundles) != 1 {
		t.Errorf("%d federated bundles, want 1", len(resp.FederatedBundles))
	}
}

func TestX509ResponseRefusesWhatItCannotEncode(t *testing.T) {
	own, fed := newCA(t, "example.org"), newCA(t, "federated.test")
	svid := mustIssue(t, own, "/a", SVIDOptions{})
	for _, tc := range []struct {
		name      string
		svids     []*x509svid.SVID
		bundles   []*x509bundle.Bundle
		federated []*x509bundle.Bundle
		wantErr   string // empty: no error
	}{
		{"minimal", []*x509svid.SVID{svid}, []*x509bundle.Bundle{own.Bundle()}, nil, ""},
		{"nothing at all", nil, nil, nil, ""},
		{"no own bundle", []*x509svid.SVID{svid}, nil, nil, `no bundle for trust domain "example.org"`},
		{"own bundle passed as federated", []*x509svid.SVID{svid}, nil, []*x509bundle.Bundle{own.Bundle()}, `no bundle for trust domain "example.org"`},
		{"unused bundle", []*x509svid.SVID{svid}, []*x509bundle.Bundle{own.Bundle(), fed.Bundle()}, nil, `bundle for trust domain "federated.test" matches no SVID`},
		{"two own bundles", []*x509svid.SVID{svid}, []*x509bundle.Bundle{own.Bundle(), own.Bundle()}, nil, "two bundles"},
		{"own and federated", []*x509svid.SVID{svid}, []*x509bundle.Bundle{own.Bundle()}, []*x509bundle.Bundle{own.Bundle()}, "both own and federated"},
		{"federated twice", []*x509svid.SVID{svid}, []*x509bundle.Bundle{own.Bundle()}, []*x509bundle.Bundle{fed.Bundle(), fed.Bundle()}, "two federated bundles"},
		{"nil SVID", []*x509svid.SVID{nil}, nil, nil, "SVID 0 is nil"},
		{"nil bundle", nil, []*x509bundle.Bundle{nil}, nil, "nil bundle"},
		{"nil federated bundle", nil, nil, []*x509bundle.Bundle{nil}, "nil federated bundle"},
		{"key that cannot be encoded", []*x509svid.SVID{{ID: svid.ID, Certificates: svid.Certificates}}, []*x509bundle.Bundle{own.Bundle()}, nil, "marshal key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := X509Response(tc.svids, tc.bundles, tc.federated...)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}
