package filesink

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/sds-bridge/sds-bridge/internal/certcheck"
	"github.com/sds-bridge/sds-bridge/rotation"
)

// genFile is one file of a generation; its name may have one directory.
type genFile struct {
	name string
	data []byte
	mode os.FileMode
}

// fileSet is everything one Update puts into a folder.
type fileSet struct {
	files []genFile // including the marker
	// dirs are made even when empty: consumers may point at federated/.
	dirs   []string
	marker marker
}

// render turns u into the layout's files. It refuses what must never
// reach a consumer; the rest of the Update's shape is rotation.NewUpdate's
// promise.
func (f *Folder) render(u *rotation.Update, now time.Time) (*fileSet, error) {
	svid, err := chooseSVID(f.cfg.SVID, u, now)
	if err != nil {
		return nil, err
	}
	leaf := svid.Certificates[0]
	set := &fileSet{marker: marker{
		Generation: u.Generation, SPIFFEID: svid.ID.String(), Serial: leaf.SerialNumber.Text(16),
		NotAfter: leaf.NotAfter.UTC(), WrittenAt: now.UTC(), SVID: f.cfg.SVID, Hint: svid.Hint,
		Layout: f.names.Layout, CertFileName: f.names.Cert, KeyFileName: f.names.Key, BundleFileName: f.names.Bundle,
	}}
	if set.files, set.dirs, err = f.files(svid, u); err != nil {
		return nil, fmt.Errorf("generation %d: %w", u.Generation, err)
	}
	m, err := json.Marshal(set.marker)
	if err != nil {
		return nil, fmt.Errorf("generation %d: encode marker: %w", u.Generation, err)
	}
	set.files = append(set.files, genFile{name: MarkerFileName, data: append(m, '\n'), mode: f.cfg.CertMode})
	return set, nil
}

// chooseSVID is the configured SVID if its leaf is valid at now: a retried
// Update may have expired since rotation accepted it.
func chooseSVID(choice string, u *rotation.Update, now time.Time) (*x509svid.SVID, error) {
	svid := u.DefaultSVID()
	if choice != "" {
		i := rotation.FindSVID(u.SVIDs, choice)
		if i < 0 {
			return nil, fmt.Errorf("generation %d: svid %q: no SVID has this hint or SPIFFE ID (the Workload API sent %s); keeping the last good set",
				u.Generation, choice, rotation.DescribeSVIDs(u.SVIDs))
		}
		svid = u.SVIDs[i]
	}
	leaf := svid.Certificates[0]
	if err := certcheck.Window(leaf, now); err != nil {
		return nil, fmt.Errorf("generation %d: refusing to write SVID %s (serial %s): %w",
			u.Generation, svid.ID, leaf.SerialNumber.Text(16), err)
	}
	return svid, nil
}

// files PEM-encodes the key, the chain (a root the Workload API includes
// belongs in bundle files only) and the trust domains' roots.
func (f *Folder) files(svid *x509svid.SVID, u *rotation.Update) (files []genFile, dirs []string, err error) {
	der, err := x509.MarshalPKCS8PrivateKey(svid.PrivateKey)
	if err != nil {
		return nil, nil, fmt.Errorf("encode private key of %s: %w", svid.ID, err)
	}
	key := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	own, _ := u.Bundle(svid.ID.TrustDomain()) // rotation.NewUpdate guarantees one with authorities
	var intermediates []byte
	for _, cert := range svid.Certificates[1:] {
		if !own.HasX509Authority(cert) {
			intermediates = append(intermediates, encodeCert(cert)...)
		}
	}
	chain := append(encodeCert(svid.Certificates[0]), intermediates...)
	certMode, keyMode := f.cfg.CertMode, f.cfg.KeyMode
	if f.names.Layout == LayoutSPIFFE {
		files = []genFile{{name: CredentialFileName, data: append(key, chain...), mode: keyMode}}
		// Never concatenated: a consumer picks trust domains by file name.
		for _, b := range u.Bundles {
			if len(b.X509Authorities()) > 0 {
				files = append(files, genFile{name: f.names.perTrustDomainFile(b.TrustDomain()), data: encodeCerts(b.X509Authorities()), mode: certMode})
			}
		}
		return files, nil, nil
	}
	bundle := encodeCerts(own.X509Authorities())
	if f.cfg.AddIntermediatesToBundle {
		bundle = append(bundle, intermediates...)
	}
	files = []genFile{{name: f.names.Cert, data: chain, mode: certMode}, {name: f.names.Key, data: key, mode: keyMode}, {}}
	if f.cfg.IncludeFederatedDomains {
		dirs = []string{FederatedDirName}
		for _, b := range u.Bundles {
			if b.TrustDomain() == own.TrustDomain() || len(b.X509Authorities()) == 0 {
				continue
			}
			roots := encodeCerts(b.X509Authorities())
			files = append(files, genFile{name: f.names.perTrustDomainFile(b.TrustDomain()), data: roots, mode: certMode})
			if f.cfg.FederatedBundle == FederatedConcatenate {
				bundle = append(bundle, roots...)
			}
		}
	}
	files[2] = genFile{name: f.names.Bundle, data: bundle, mode: certMode}
	return files, dirs, nil
}

func encodeCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func encodeCerts(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, encodeCert(c)...)
	}
	return out
}

// omitExpired is u without certificates expired at now in the chains and
// bundles, as spiffe-helper's omit_expired: some consumers refuse a CA file
// with an old CA SPIRE has not pruned yet. Leaves stay (chooseSVID refuses
// an expired one). u is shared with every sink and not changed.
func omitExpired(u *rotation.Update, on bool, now time.Time) *rotation.Update {
	if !on {
		return u
	}
	out := *u
	out.SVIDs = make([]*x509svid.SVID, len(u.SVIDs))
	for i, s := range u.SVIDs {
		c := *s
		c.Certificates = append(s.Certificates[:1:1], unexpired(s.Certificates[1:], now)...)
		out.SVIDs[i] = &c
	}
	out.Bundles = make([]*x509bundle.Bundle, len(u.Bundles))
	for i, b := range u.Bundles {
		out.Bundles[i] = x509bundle.FromX509Authorities(b.TrustDomain(), unexpired(b.X509Authorities(), now))
	}
	return &out
}

// unexpired uses spiffe-helper's test, now.After(cert.NotAfter).
func unexpired(certs []*x509.Certificate, now time.Time) []*x509.Certificate {
	return slices.DeleteFunc(slices.Clone(certs), func(c *x509.Certificate) bool { return now.After(c.NotAfter) })
}
