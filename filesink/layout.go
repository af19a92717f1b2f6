package filesink

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sds-bridge/sds-bridge/internal/certcheck"
	"github.com/sds-bridge/sds-bridge/rotation"
)

// fileNames are the managed names of one folder.
type fileNames struct {
	layout            Layout
	cert, key, bundle string // LayoutSPIFFEHelper only
	// svid chooses the SVID (hint or SPIFFE ID); empty is the default one.
	svid string
	// LayoutSPIFFEHelper only: federated/<td>.pem files, federated roots
	// appended to the bundle file, intermediates appended to it.
	federated, concatenate, intermediates bool
}

// federatedFile is the LayoutSPIFFEHelper path, inside a generation, of
// td's bundle.
func federatedFile(td spiffeid.TrustDomain) string {
	return FederatedDirName + "/" + td.Name() + FederatedBundleSuffix
}

// trustBundleFile is the LayoutSPIFFE file name of td's bundle.
func trustBundleFile(td spiffeid.TrustDomain) string { return td.Name() + TrustBundleSuffix }

// trustDomainOfBundleFile reports whether name is a LayoutSPIFFE trust
// bundle file and for which trust domain. Names that do not carry a valid
// trust domain are not ours.
func trustDomainOfBundleFile(name string) (spiffeid.TrustDomain, bool) {
	base, ok := strings.CutSuffix(name, TrustBundleSuffix)
	if !ok || base == "" {
		return spiffeid.TrustDomain{}, false
	}
	td, err := spiffeid.TrustDomainFromString(base)
	if err != nil || td.Name() != base {
		return spiffeid.TrustDomain{}, false
	}
	return td, true
}

// marker is the content of MarkerFileName.
type marker struct {
	Generation uint64    `json:"generation"`
	SPIFFEID   string    `json:"spiffe_id"`
	Serial     string    `json:"serial"`
	NotAfter   time.Time `json:"not_after"`
	WrittenAt  time.Time `json:"written_at"`
	// SVID is the folder's svid choice when it was written, so that
	// Prepare can tell a set written for another choice (the config
	// changed) from current material.
	SVID string `json:"svid,omitempty"`
	// Hint is the Workload API's hint of the SVID written, so that a
	// folder chosen by hint can be checked against its choice.
	Hint string `json:"hint,omitempty"`
	// Layout and the file names make the folder self-describing: `check
	// --dir` reads what was written, without being told the names.
	Layout         Layout `json:"layout,omitempty"`
	CertFileName   string `json:"cert_file_name,omitempty"`
	KeyFileName    string `json:"key_file_name,omitempty"`
	BundleFileName string `json:"bundle_file_name,omitempty"`
}

// genFile is one file of a generation.
type genFile struct {
	name string
	data []byte
	mode os.FileMode
}

// fileSet is everything one Update puts into a folder.
type fileSet struct {
	files []genFile // including the marker; a name may have one directory level
	// dirs are subdirectories created in the generation even when empty
	// (federated/ with no federation yet: consumers may point at it).
	dirs   []string
	marker marker
}

// render turns u into the files of the layout. It refuses material that
// must never reach a consumer: no SVID matching names.svid, or a leaf that
// is expired or not yet valid at write time. The rest of the Update's shape
// (an SVID, a certificate, the own bundle) is rotation.NewUpdate's promise.
func render(names fileNames, u *rotation.Update, certMode, keyMode os.FileMode, now time.Time) (*fileSet, error) {
	svid := u.DefaultSVID()
	if names.svid != "" {
		i := rotation.FindSVID(u.SVIDs, names.svid)
		if i < 0 {
			return nil, fmt.Errorf("filesink: generation %d: svid %q: no SVID has this hint or SPIFFE ID (the Workload API sent %s); keeping the last good set",
				u.Generation, names.svid, rotation.DescribeSVIDs(u.SVIDs))
		}
		svid = u.SVIDs[i]
	}
	leaf := svid.Certificates[0]
	serial := leaf.SerialNumber.Text(16)
	// Checked again at write time: a retried Update may have expired since
	// rotation accepted it.
	if err := certcheck.Window(leaf, now); err != nil {
		return nil, fmt.Errorf("filesink: generation %d: refusing to write SVID %s (serial %s): %w",
			u.Generation, svid.ID, serial, err)
	}
	ownTD := svid.ID.TrustDomain()
	own, _ := u.Bundle(ownTD) // rotation.NewUpdate guarantees one with authorities

	// The chain is leaf plus intermediates: a root the Workload API might
	// include belongs in the bundle file only.
	var chain, intermediates []byte
	for _, c := range svid.Certificates {
		if c != leaf && own.HasX509Authority(c) {
			continue
		}
		chain = append(chain, encodeCert(c)...)
		if c != leaf {
			intermediates = append(intermediates, encodeCert(c)...)
		}
	}
	der, err := x509.MarshalPKCS8PrivateKey(svid.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("filesink: generation %d: encode private key of %s: %w", u.Generation, svid.ID, err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})

	set := &fileSet{marker: marker{
		Generation: u.Generation,
		SPIFFEID:   svid.ID.String(),
		Serial:     serial,
		NotAfter:   leaf.NotAfter.UTC(),
		WrittenAt:  now.UTC(),
		SVID:       names.svid,
		Hint:       svid.Hint,
		Layout:     names.layout,
	}}
	if names.layout == LayoutSPIFFEHelper {
		set.marker.CertFileName, set.marker.KeyFileName, set.marker.BundleFileName = names.cert, names.key, names.bundle
	}
	switch names.layout {
	case LayoutSPIFFEHelper:
		bundle := encodeCerts(own.X509Authorities())
		if names.intermediates {
			bundle = append(bundle, intermediates...)
		}
		var federated []genFile
		if names.federated {
			set.dirs = []string{FederatedDirName}
			for _, b := range u.Bundles {
				if b.TrustDomain() == ownTD || len(b.X509Authorities()) == 0 {
					continue
				}
				roots := encodeCerts(b.X509Authorities())
				federated = append(federated, genFile{name: federatedFile(b.TrustDomain()), data: roots, mode: certMode})
				if names.concatenate {
					bundle = append(bundle, roots...)
				}
			}
		}
		set.files = []genFile{
			{name: names.cert, data: chain, mode: certMode},
			{name: names.key, data: keyPEM, mode: keyMode},
			{name: names.bundle, data: bundle, mode: certMode},
		}
		set.files = append(set.files, federated...)
	case LayoutSPIFFE:
		cred := make([]byte, 0, len(keyPEM)+len(chain))
		cred = append(append(cred, keyPEM...), chain...)
		set.files = []genFile{{name: CredentialFileName, data: cred, mode: keyMode}}
		// One file per trust domain, never concatenated: the standard lets
		// a consumer pick the trust domains it accepts by file name.
		for _, b := range u.Bundles {
			if len(b.X509Authorities()) == 0 {
				continue
			}
			set.files = append(set.files, genFile{
				name: trustBundleFile(b.TrustDomain()),
				data: encodeCerts(b.X509Authorities()),
				mode: certMode,
			})
		}
	default:
		return nil, fmt.Errorf("filesink: layout %q: unknown", names.layout)
	}
	m, err := json.Marshal(set.marker)
	if err != nil {
		return nil, fmt.Errorf("filesink: generation %d: encode marker: %w", u.Generation, err)
	}
	set.files = append(set.files, genFile{name: MarkerFileName, data: append(m, '\n'), mode: certMode})
	if err := uniqueNames(set.files); err != nil {
		return nil, fmt.Errorf("filesink: generation %d: %w", u.Generation, err)
	}
	return set, nil
}

func uniqueNames(files []genFile) error {
	seen := make(map[string]bool, len(files))
	for _, f := range files {
		if seen[f.name] {
			return fmt.Errorf("file %q would be written twice", f.name)
		}
		seen[f.name] = true
	}
	for _, f := range files {
		if dir, _, ok := strings.Cut(f.name, "/"); ok && seen[dir] {
			return fmt.Errorf("%q is both a file and the directory of %q", dir, f.name)
		}
	}
	return nil
}

// topName is the name in the folder that makes name reachable: the name
// itself, or for "federated/x.pem" its directory's link.
func topName(name string) string {
	dir, _, _ := strings.Cut(name, "/")
	return dir
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

// errNoPEM and errTrailing tell a truncated or foreign file apart from a
// PEM file with a bad block.
var (
	errNoPEM    = errors.New("no PEM block found")
	errTrailing = errors.New("data after the last PEM block (truncated or not PEM)")
)

// decodePEM strictly splits data into PEM blocks: a file cut short in the
// middle of a block is an error, not a shorter chain.
func decodePEM(data []byte) ([]*pem.Block, error) {
	var blocks []*pem.Block
	rest := data
	for {
		b, r := pem.Decode(rest)
		if b == nil {
			break
		}
		blocks = append(blocks, b)
		rest = r
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errTrailing
	}
	if len(blocks) == 0 {
		return nil, errNoPEM
	}
	return blocks, nil
}
