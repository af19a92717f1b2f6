package filesink

import (
	"slices"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/sds-bridge/sds-bridge/internal/devapi"
	"github.com/sds-bridge/sds-bridge/rotation"
)

// testContent is an SVID of example.org whose chain has an intermediate
// (I, not in its bundle), the bundles of example.org (O) and partner.net
// (P), and their PEM encodings.
type testContent struct {
	svid                                   *x509svid.SVID
	u                                      *rotation.Update
	own, peer                              spiffeid.TrustDomain
	key, chain, inter, ownRoots, peerRoots []byte
}

func newTestContent(t *testing.T) testContent {
	o, p := newCA(t, "example.org"), newCA(t, "partner.net")
	svid := o.issue(t, devapi.SVIDOptions{})
	mid := newCA(t, "example.org").Root()
	svid.Certificates = append(svid.Certificates, mid)
	inter := certPEM(mid)
	return testContent{svid: svid, u: update(1, svid, p.Bundle(), o.Bundle()), own: o.td, peer: p.td, key: keyPEM(t, svid),
		chain: append(certPEM(svid.Certificates[0]), inter...), inter: inter, ownRoots: certPEM(o.Root()), peerRoots: certPEM(p.Root())}
}

// What each layout writes is what a reader of that layout looks for: the
// key and chain at KeyFile and CertFile, the own roots at BundleFile, and
// every other trust domain's roots at PerTrustDomainFile, whose name
// bundleTrustDomain reads back.
func TestEachLayoutReadsTheNamesItWrites(t *testing.T) {
	c := newTestContent(t)
	for _, cfg := range []Config{{IncludeFederatedDomains: true}, {Layout: LayoutSPIFFE}} {
		f, _ := newFolder(t, cfg)
		files, _, err := f.files(c.svid, c.u)
		if err != nil {
			t.Fatal(err)
		}
		byName := map[string]genFile{}
		for _, file := range files {
			byName[file.name] = file
		}
		names, keyChain := f.names, append(slices.Clone(c.key), c.chain...)
		if file := byName[names.keyFile()]; file.mode != f.cfg.KeyMode || !slices.Contains([]string{string(c.key), string(keyChain)}, string(file.data)) {
			t.Errorf("%s: key file %q = %+v", names.Layout, names.keyFile(), file)
		}
		if file := byName[names.certFile()]; string(file.data) != string(c.chain) && string(file.data) != string(keyChain) {
			t.Errorf("%s: cert file %q = %+v", names.Layout, names.certFile(), file)
		}
		if file := byName[names.bundleFile(c.own)]; string(file.data) != string(c.ownRoots) {
			t.Errorf("%s: own bundle %q = %+v, want only the own roots", names.Layout, names.bundleFile(c.own), file)
		}
		name := names.perTrustDomainFile(c.peer)
		if file := byName[name]; string(file.data) != string(c.peerRoots) {
			t.Errorf("%s: %s = %+v, want the partner's roots", names.Layout, name, file)
		}
		base := name[len(names.bundleDir())+1:]
		if names.bundleDir() == "." {
			base = name
		}
		if td, ok := names.bundleTrustDomain(base); !ok || td != c.peer {
			t.Errorf("%s: BundleTrustDomain(%q) = %v, %v", names.Layout, base, td, ok)
		}
	}
}

// spiffe-helper's options: the intermediates and, asked for, the
// federated roots go into the bundle file after the own roots.
func TestSPIFFEHelperBundleOptions(t *testing.T) {
	c := newTestContent(t)
	f, _ := newFolder(t, Config{IncludeFederatedDomains: true, FederatedBundle: FederatedConcatenate, AddIntermediatesToBundle: true})
	files, dirs, err := f.files(c.svid, c.u)
	if err != nil {
		t.Fatal(err)
	}
	if want := slices.Concat(c.ownRoots, c.inter, c.peerRoots); files[2].name != DefaultBundleFileName || string(files[2].data) != string(want) {
		t.Errorf("bundle file = %+v, want own roots, intermediates, federated roots", files[2])
	}
	if !slices.Equal(dirs, []string{FederatedDirName}) {
		t.Errorf("dirs = %v", dirs)
	}
	plain, _ := newFolder(t, Config{})
	if files, dirs, _ := plain.files(c.svid, c.u); len(files) != 3 || dirs != nil {
		t.Errorf("without options: %d files, dirs %v; want the three files only", len(files), dirs)
	}
}

// A marker's names are used only if they are plain file names (the folder
// may be writable by its consumer) and only for the layout it describes.
func TestMarkerFillTakesOnlyPlainNamesOfItsLayout(t *testing.T) {
	m := &marker{Layout: LayoutSPIFFEHelper, CertFileName: "server.crt", KeyFileName: "../etc/shadow", BundleFileName: "..data"}
	got := m.fill(Names{})
	if got.Layout != LayoutSPIFFEHelper || got.Cert != "server.crt" || got.Key != "" || got.Bundle != "" {
		t.Errorf("Fill = %+v", got)
	}
	if got := m.fill(Names{Layout: LayoutSPIFFE}); got.Cert != "" {
		t.Errorf("Fill for another layout = %+v, want nothing taken", got)
	}
	var none *marker
	if got := none.fill(Names{Cert: "a"}); got != (Names{Cert: "a"}) {
		t.Errorf("nil marker changed %+v", got)
	}
}
