package filesink

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/sds-bridge/sds-bridge/internal/certcheck"
	"github.com/sds-bridge/sds-bridge/internal/layout"
	"github.com/sds-bridge/sds-bridge/rotation"
)

// fileNames are the managed names of one folder and what the writer puts
// in them.
type fileNames struct {
	layout.Names
	// svid chooses the SVID (hint or SPIFFE ID); empty is the default one.
	svid string
	opts layout.Options
}

// marker is the content of MarkerFileName.
type marker = layout.Marker

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
	svid, err := chooseSVID(names.svid, u, now)
	if err != nil {
		return nil, err
	}
	content, err := encodeContent(svid, u)
	if err != nil {
		return nil, fmt.Errorf("generation %d: %w", u.Generation, err)
	}
	leaf := svid.Certificates[0]
	set := &fileSet{marker: layout.NewMarker(names.Names)}
	set.marker.Generation, set.marker.SPIFFEID, set.marker.Serial = u.Generation, svid.ID.String(), leaf.SerialNumber.Text(16)
	set.marker.NotAfter, set.marker.WrittenAt = leaf.NotAfter.UTC(), now.UTC()
	set.marker.SVID, set.marker.Hint = names.svid, svid.Hint

	files, dirs := names.Files(content, names.opts)
	set.dirs = dirs
	for _, f := range files {
		mode := certMode
		if f.Secret {
			mode = keyMode
		}
		set.files = append(set.files, genFile{name: f.Name, data: f.Data, mode: mode})
	}
	m, err := json.Marshal(set.marker)
	if err != nil {
		return nil, fmt.Errorf("generation %d: encode marker: %w", u.Generation, err)
	}
	set.files = append(set.files, genFile{name: MarkerFileName, data: append(m, '\n'), mode: certMode})
	if err := uniqueNames(set.files); err != nil {
		return nil, fmt.Errorf("generation %d: %w", u.Generation, err)
	}
	return set, nil
}

// chooseSVID is the SVID the folder is configured for (the default one
// unless choice names another), if its leaf is valid at now: checked again
// at write time, as a retried Update may have expired since rotation
// accepted it.
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

// encodeContent PEM-encodes what the layout distributes: the key, the
// chain, and every trust domain's roots.
func encodeContent(svid *x509svid.SVID, u *rotation.Update) (layout.Content, error) {
	own, _ := u.Bundle(svid.ID.TrustDomain()) // rotation.NewUpdate guarantees one with authorities
	c := layout.Content{Own: svid.ID.TrustDomain()}
	// The chain is leaf plus intermediates: a root the Workload API might
	// include belongs in the bundle files only.
	leaf := svid.Certificates[0]
	c.Chain = encodeCert(leaf)
	leafLen := len(c.Chain)
	for _, cert := range svid.Certificates[1:] {
		if !own.HasX509Authority(cert) {
			c.Chain = append(c.Chain, encodeCert(cert)...)
		}
	}
	c.Intermediates = c.Chain[leafLen:len(c.Chain):len(c.Chain)]
	der, err := x509.MarshalPKCS8PrivateKey(svid.PrivateKey)
	if err != nil {
		return layout.Content{}, fmt.Errorf("encode private key of %s: %w", svid.ID, err)
	}
	c.Key = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	for _, b := range u.Bundles {
		if len(b.X509Authorities()) > 0 {
			c.Bundles = append(c.Bundles, layout.Bundle{TrustDomain: b.TrustDomain(), Roots: encodeCerts(b.X509Authorities())})
		}
	}
	return c, nil
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
