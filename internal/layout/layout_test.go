package layout

import (
	"slices"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var (
	own  = spiffeid.RequireTrustDomainFromString("example.org")
	peer = spiffeid.RequireTrustDomainFromString("partner.net")
)

func content() Content {
	return Content{Key: []byte("K"), Chain: []byte("LI"), Intermediates: []byte("I"), Own: own,
		Bundles: []Bundle{{TrustDomain: peer, Roots: []byte("P")}, {TrustDomain: own, Roots: []byte("O")}}}
}

// What each layout writes is what a reader of that layout looks for: the
// key and chain at KeyFile and CertFile, the own roots at BundleFile, and
// every other trust domain's roots at PerTrustDomainFile, whose name
// BundleTrustDomain reads back.
func TestEachLayoutReadsTheNamesItWrites(t *testing.T) {
	helper, _ := Names{}.WithDefaults()
	for _, tc := range []struct {
		names Names
		opts  Options
	}{
		{helper, Options{Federated: true}},
		{Names{Kind: SPIFFE}, Options{}},
	} {
		files, _ := tc.names.Files(content(), tc.opts)
		byName := map[string]File{}
		for _, f := range files {
			byName[f.Name] = f
		}
		if f := byName[tc.names.KeyFile()]; !f.Secret || !slices.Contains([]string{"K", "KLI"}, string(f.Data)) {
			t.Errorf("%s: key file %q = %+v", tc.names.Kind, tc.names.KeyFile(), f)
		}
		if f := byName[tc.names.CertFile()]; string(f.Data) != "LI" && string(f.Data) != "KLI" {
			t.Errorf("%s: cert file %q = %+v", tc.names.Kind, tc.names.CertFile(), f)
		}
		if f := byName[tc.names.BundleFile(own)]; string(f.Data) != "O" {
			t.Errorf("%s: own bundle %q = %+v, want only the own roots", tc.names.Kind, tc.names.BundleFile(own), f)
		}
		name := tc.names.PerTrustDomainFile(peer)
		if f := byName[name]; string(f.Data) != "P" {
			t.Errorf("%s: %s = %+v, want the partner's roots", tc.names.Kind, name, f)
		}
		base := name[len(tc.names.BundleDir())+1:]
		if tc.names.BundleDir() == "." {
			base = name
		}
		if td, ok := tc.names.BundleTrustDomain(base); !ok || td != peer {
			t.Errorf("%s: BundleTrustDomain(%q) = %v, %v", tc.names.Kind, base, td, ok)
		}
	}
}

// spiffe-helper's options: the intermediates and, asked for, the
// federated roots go into the bundle file after the own roots.
func TestSPIFFEHelperBundleOptions(t *testing.T) {
	names, _ := Names{}.WithDefaults()
	files, dirs := names.Files(content(), Options{Federated: true, Concatenate: true, Intermediates: true})
	if files[2].Name != DefaultBundleFileName || string(files[2].Data) != "OIP" {
		t.Errorf("bundle file = %+v, want own roots, intermediates, federated roots", files[2])
	}
	if !slices.Equal(dirs, []string{FederatedDirName}) {
		t.Errorf("dirs = %v", dirs)
	}
	if files, dirs := names.Files(content(), Options{}); len(files) != 3 || dirs != nil {
		t.Errorf("without options: %d files, dirs %v; want the three files only", len(files), dirs)
	}
}

// A marker's names are used only if they are plain file names (the folder
// may be writable by its consumer) and only for the layout it describes.
func TestMarkerFillTakesOnlyPlainNamesOfItsLayout(t *testing.T) {
	m := &Marker{Layout: SPIFFEHelper, CertFileName: "server.crt", KeyFileName: "../etc/shadow", BundleFileName: "..data"}
	got := m.Fill(Names{})
	if got.Kind != SPIFFEHelper || got.Cert != "server.crt" || got.Key != "" || got.Bundle != "" {
		t.Errorf("Fill = %+v", got)
	}
	if got := m.Fill(Names{Kind: SPIFFE}); got.Cert != "" {
		t.Errorf("Fill for another layout = %+v, want nothing taken", got)
	}
	var none *Marker
	if got := none.Fill(Names{Cert: "a"}); got != (Names{Cert: "a"}) {
		t.Errorf("nil marker changed %+v", got)
	}
}
