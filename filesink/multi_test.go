package filesink

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/sds-bridge/sds-bridge/internal/devapi"
	"github.com/sds-bridge/sds-bridge/rotation"
)

// twoSVIDs issues the default SVID (/db, no hint) and a second one
// (/db-admin, hint "admin") from c.
func twoSVIDs(t *testing.T, c testCA) (first, second *x509svid.SVID) {
	t.Helper()
	first = c.issue(t, devapi.SVIDOptions{})
	second, err := c.IssueWith(c.id("/db-admin"), time.Hour, devapi.SVIDOptions{Hint: "admin"})
	if err != nil {
		t.Fatal(err)
	}
	return first, second
}

func multiUpdate(gen uint64, svids []*x509svid.SVID, bundles ...*x509bundle.Bundle) *rotation.Update {
	u := update(gen, svids[0], bundles...)
	u.SVIDs = svids
	return u
}

func TestFolderWritesTheChosenSVID(t *testing.T) {
	c := newCA(t, "example.org")
	first, second := twoSVIDs(t, c)
	for _, tt := range []struct {
		name, svid string
		want       *x509svid.SVID
	}{
		{"default", "", first},
		{"by hint", "admin", second},
		{"by SPIFFE ID", second.ID.String(), second},
		{"first by SPIFFE ID", first.ID.String(), first},
	} {
		for _, layout := range []Layout{LayoutSPIFFEHelper, LayoutSPIFFE} {
			t.Run(tt.name+"/"+string(layout), func(t *testing.T) {
				f, _ := newFolder(t, Config{SVID: tt.svid, Layout: layout})
				if err := f.Apply(t.Context(), multiUpdate(1, []*x509svid.SVID{first, second}, c.Bundle())); err != nil {
					t.Fatal(err)
				}
				m, err := Inspect(f.InspectConfig(0))
				if err != nil {
					t.Fatal(err)
				}
				if m.SPIFFEID != tt.want.ID || m.Serial != tt.want.Certificates[0].SerialNumber.Text(16) {
					t.Errorf("folder holds %s serial %s, want %s serial %x", m.SPIFFEID, m.Serial, tt.want.ID, tt.want.Certificates[0].SerialNumber)
				}
				if got := readMarkerFile(t, f.Dir()).SPIFFEID; got != tt.want.ID.String() {
					t.Errorf("marker spiffe_id %q, want %q", got, tt.want.ID)
				}
			})
		}
	}
}

// A folder whose SVID is missing from an Update keeps its set and reports
// the failure: writing the default identity instead would hand a database
// another identity than configured.
func TestChosenSVIDMissingKeepsTheLastGoodSet(t *testing.T) {
	c := newCA(t, "example.org")
	first, second := twoSVIDs(t, c)
	f, _ := newFolder(t, Config{SVID: "admin"})
	if err := f.Apply(t.Context(), multiUpdate(1, []*x509svid.SVID{first, second}, c.Bundle())); err != nil {
		t.Fatal(err)
	}
	err := f.Apply(t.Context(), multiUpdate(2, []*x509svid.SVID{c.issue(t, devapi.SVIDOptions{})}, c.Bundle()))
	if err == nil {
		t.Fatal("Apply without the chosen SVID succeeded")
	}
	for _, want := range []string{`svid "admin"`, "id=" + first.ID.String()} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if st := f.Stats(); st.WriteFailures != 1 {
		t.Errorf("Stats %+v, want 1 write failure", st)
	}
	m, err := Inspect(f.InspectConfig(0))
	if err != nil {
		t.Fatal(err)
	}
	if m.Generation != 1 || m.SPIFFEID != second.ID {
		t.Errorf("folder holds generation %d of %s, want generation 1 of %s", m.Generation, m.SPIFFEID, second.ID)
	}
}

func TestFederatedBundles(t *testing.T) {
	own := newCA(t, "example.org")
	fed := newCA(t, "partner.test")
	svid := own.issue(t, devapi.SVIDOptions{})
	ownRoots, fedRoots := certPEM(own.Root()), certPEM(fed.Root())

	t.Run("spiffe-helper separate files", func(t *testing.T) {
		f, _ := newFolder(t, Config{IncludeFederatedDomains: true})
		if err := f.Apply(t.Context(), update(1, svid, own.Bundle(), fed.Bundle())); err != nil {
			t.Fatal(err)
		}
		if got := readFile(t, filepath.Join(f.Dir(), DefaultBundleFileName)); !bytes.Equal(got, ownRoots) {
			t.Error("bundle file is not exactly the own trust domain's roots")
		}
		if got := readFile(t, filepath.Join(f.Dir(), "federated", "partner.test.pem")); !bytes.Equal(got, fedRoots) {
			t.Error("federated/partner.test.pem is not the federated roots")
		}
		if target, err := os.Readlink(filepath.Join(f.Dir(), FederatedDirName)); err != nil || target != DataLink+"/"+FederatedDirName {
			t.Errorf("federated link = %q, %v; want ..data/federated", target, err)
		}
		m, err := Inspect(f.InspectConfig(0))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(m.TrustDomains, []spiffeid.TrustDomain{own.td, fed.td}) {
			t.Errorf("Inspect trust domains %v, want both", m.TrustDomains)
		}

		// The federation goes away: the file goes, the directory stays.
		if err := f.Apply(t.Context(), update(2, svid, own.Bundle())); err != nil {
			t.Fatal(err)
		}
		if got := listDir(t, filepath.Join(f.Dir(), FederatedDirName)); len(got) != 0 {
			t.Errorf("federated/ after the federation went away: %v", got)
		}
		if _, err := Inspect(f.InspectConfig(0)); err != nil {
			t.Error(err)
		}
	})

	t.Run("spiffe-helper without include_federated_domains", func(t *testing.T) {
		f, _ := newFolder(t, Config{})
		if err := f.Apply(t.Context(), update(1, svid, own.Bundle(), fed.Bundle())); err != nil {
			t.Fatal(err)
		}
		if got := readFile(t, filepath.Join(f.Dir(), DefaultBundleFileName)); !bytes.Equal(got, ownRoots) {
			t.Error("bundle file is not exactly the own trust domain's roots")
		}
		if _, err := os.Lstat(filepath.Join(f.Dir(), FederatedDirName)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("federated exists without include_federated_domains: %v", err)
		}
	})

	t.Run("spiffe-helper concatenate", func(t *testing.T) {
		f, _ := newFolder(t, Config{IncludeFederatedDomains: true, FederatedBundle: FederatedConcatenate})
		if err := f.Apply(t.Context(), update(1, svid, own.Bundle(), fed.Bundle())); err != nil {
			t.Fatal(err)
		}
		want := append(append([]byte(nil), ownRoots...), fedRoots...)
		if got := readFile(t, filepath.Join(f.Dir(), DefaultBundleFileName)); !bytes.Equal(got, want) {
			t.Error("bundle file is not own roots followed by federated roots")
		}
		if _, err := os.Stat(filepath.Join(f.Dir(), "federated", "partner.test.pem")); err != nil {
			t.Error(err)
		}
		if _, err := Inspect(f.InspectConfig(0)); err != nil {
			t.Error(err)
		}
	})

	t.Run("spiffe layout", func(t *testing.T) {
		f, _ := newFolder(t, Config{Layout: LayoutSPIFFE})
		if err := f.Apply(t.Context(), update(1, svid, own.Bundle(), fed.Bundle())); err != nil {
			t.Fatal(err)
		}
		fedFile := filepath.Join(f.Dir(), "partner.test"+TrustBundleSuffix)
		if got := readFile(t, fedFile); !bytes.Equal(got, fedRoots) {
			t.Error("partner.test bundle file is not the federated roots")
		}
		if err := f.Apply(t.Context(), update(2, svid, own.Bundle())); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(fedFile); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("federated bundle file after the federation went away: %v", err)
		}
	})
}

// intermediateSVID builds root → intermediate → leaf for id, which the
// in-memory CA cannot (it signs leaves with its root).
func intermediateSVID(t *testing.T, id spiffeid.ID) (*x509svid.SVID, *x509bundle.Bundle) {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	now := time.Now()
	sign := func(tmpl, parent *x509.Certificate, pub any, key *ecdsa.PrivateKey) *x509.Certificate {
		tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Minute), now.Add(time.Hour)
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	caTmpl := func(serial int64, name string) *x509.Certificate {
		return &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
			URIs: []*url.URL{id.TrustDomain().ID().URL()}}
	}
	rootKey, interKey, leafKey := newKey(), newKey(), newKey()
	rootTmpl := caTmpl(1, "root")
	root := sign(rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	inter := sign(caTmpl(2, "intermediate"), root, interKey.Public(), rootKey)
	leaf := sign(&x509.Certificate{SerialNumber: big.NewInt(3), URIs: []*url.URL{id.URL()},
		KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true}, inter, leafKey.Public(), interKey)
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf, inter}, PrivateKey: leafKey},
		x509bundle.FromX509Authorities(id.TrustDomain(), []*x509.Certificate{root})
}

func TestAddIntermediatesToBundle(t *testing.T) {
	id := spiffeid.RequireFromString("spiffe://example.org/mysql")
	svid, bundle := intermediateSVID(t, id)
	root, inter := bundle.X509Authorities()[0], svid.Certificates[1]
	for _, tt := range []struct {
		add  bool
		want []byte
	}{
		{false, certPEM(root)},
		{true, certPEM(root, inter)},
	} {
		f, _ := newFolder(t, Config{AddIntermediatesToBundle: tt.add})
		if err := f.Apply(context.Background(), update(1, svid, bundle)); err != nil {
			t.Fatal(err)
		}
		if got := readFile(t, filepath.Join(f.Dir(), DefaultBundleFileName)); !bytes.Equal(got, tt.want) {
			t.Errorf("add_intermediates_to_bundle %v: bundle file has the wrong certificates", tt.add)
		}
		if got := readFile(t, filepath.Join(f.Dir(), DefaultCertFileName)); !bytes.Equal(got, certPEM(svid.Certificates...)) {
			t.Errorf("add_intermediates_to_bundle %v: cert file is not leaf and intermediate", tt.add)
		}
		if m, err := Inspect(f.InspectConfig(0)); err != nil || m.SPIFFEID != id {
			t.Errorf("add_intermediates_to_bundle %v: Inspect = %+v, %v", tt.add, m, err)
		}
	}
}

func TestNewValidatesFederationKeys(t *testing.T) {
	abs := t.TempDir()
	for _, tt := range []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"concatenate without include", Config{Dir: abs, FederatedBundle: FederatedConcatenate}, `federated_bundle: "concatenate" needs include_federated_domains`},
		{"unknown federated_bundle", Config{Dir: abs, IncludeFederatedDomains: true, FederatedBundle: "merge"}, `federated_bundle: "merge"`},
		{"federated name taken", Config{Dir: abs, IncludeFederatedDomains: true, BundleFileName: "federated"}, `bundle_file_name: "federated" is reserved`},
		{"include in spiffe layout", Config{Dir: abs, Layout: LayoutSPIFFE, IncludeFederatedDomains: true}, "include_federated_domains: true applies only"},
		{"intermediates in spiffe layout", Config{Dir: abs, Layout: LayoutSPIFFE, AddIntermediatesToBundle: true}, "add_intermediates_to_bundle: true applies only"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New() error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// A set written for another svid choice is valid material of the wrong
// identity once the config changes: Prepare removes it, so that nothing
// reports the folder ready before the chosen SVID is written.
func TestPrepareRemovesASetWrittenForAnotherSVID(t *testing.T) {
	c := newCA(t, "example.org")
	first, second := twoSVIDs(t, c)
	dir := filepath.Join(t.TempDir(), "creds")
	f, _ := newFolder(t, Config{Dir: dir, SVID: "admin"})
	if err := f.Apply(t.Context(), multiUpdate(1, []*x509svid.SVID{first, second}, c.Bundle())); err != nil {
		t.Fatal(err)
	}

	same, _ := newFolder(t, Config{Dir: dir, SVID: "admin"})
	if err := same.Prepare(t.Context()); err != nil {
		t.Fatal(err)
	}
	if m, err := Inspect(same.InspectConfig(0)); err != nil || m.SPIFFEID != second.ID {
		t.Fatalf("same choice: Prepare did not keep the set: %+v, %v", m, err)
	}

	other, logs := newFolder(t, Config{Dir: dir})
	if err := other.Prepare(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := Inspect(other.InspectConfig(0)); !errors.Is(err, ErrMissing) {
		t.Errorf("Inspect after Prepare with another svid choice: %v, want missing files", err)
	}
	if got := listDir(t, dir); len(got) != 0 {
		t.Errorf("folder after Prepare: %v, want empty", got)
	}
	if !strings.Contains(logs.String(), `written for svid \"admin\"`) {
		t.Errorf("Prepare did not say why it removed the set:\n%s", logs)
	}
}
