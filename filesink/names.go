// The names in a credential folder, shared by the writer and the reader:
// which files each layout writes and reads, the marker that describes a
// generation, and the link that names the current one.

package filesink

import (
	"cmp"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Layout names the set of files written into a folder.
type Layout string

const (
	// SPIFFEHelper writes svid.pem (leaf and intermediates), svid_key.pem
	// (PKCS#8) and svid_bundle.pem (own trust domain roots), as
	// spiffe-helper does. It is the default.
	LayoutSPIFFEHelper Layout = "spiffe-helper"
	// SPIFFE follows the SPIFFE Filesystem Delivery standard:
	// credential-bundle.private-key.pem (key, then chain without root) and
	// one <trust-domain>.spiffe-trust-bundle.pem per trust domain.
	LayoutSPIFFE Layout = "spiffe"
)

// The names of a folder.
const (
	DefaultCertFileName   = "svid.pem"
	DefaultKeyFileName    = "svid_key.pem"
	DefaultBundleFileName = "svid_bundle.pem"

	// MarkerFileName describes the generation in every folder, whatever
	// the layout, so one can tell what is on disk.
	MarkerFileName = "sds-bridge.json"
	// CredentialFileName is the key-and-chain file of SPIFFE.
	CredentialFileName = "credential-bundle.private-key.pem"
	// TrustBundleSuffix ends every trust bundle file of SPIFFE.
	TrustBundleSuffix = ".spiffe-trust-bundle.pem"

	// FederatedDirName is the directory of federated bundles of
	// SPIFFEHelper with federated bundles, inside each generation; the
	// stable name is a link to "..data/federated".
	FederatedDirName = "federated"
	// FederatedBundleSuffix ends every file in FederatedDirName.
	FederatedBundleSuffix = ".pem"

	// DataLink is the symlink that names the current generation directory.
	DataLink = "..data"
)

// Names are the managed names of one folder: its layout and, for
// SPIFFEHelper, the three configurable file names.
type Names struct {
	Layout            Layout
	Cert, Key, Bundle string // SPIFFEHelper only
}

// WithDefaults fills the layout (SPIFFEHelper) and SPIFFEHelper's file
// names; an unknown layout is an error.
func (n Names) WithDefaults() (Names, error) {
	n.Layout = cmp.Or(n.Layout, LayoutSPIFFEHelper)
	switch n.Layout {
	case LayoutSPIFFEHelper:
		n.Cert = cmp.Or(n.Cert, DefaultCertFileName)
		n.Key = cmp.Or(n.Key, DefaultKeyFileName)
		n.Bundle = cmp.Or(n.Bundle, DefaultBundleFileName)
	case LayoutSPIFFE:
	default:
		return Names{}, fmt.Errorf("layout %q: want %q or %q", n.Layout, LayoutSPIFFEHelper, LayoutSPIFFE)
	}
	return n, nil
}

// certFile holds the certificate chain (in SPIFFE, after the key).
func (n Names) certFile() string {
	if n.Layout == LayoutSPIFFE {
		return CredentialFileName
	}
	return n.Cert
}

// keyFile holds the private key; the same file as CertFile in SPIFFE.
func (n Names) keyFile() string {
	if n.Layout == LayoutSPIFFE {
		return CredentialFileName
	}
	return n.Key
}

// ownBundleFile is the file holding only the SVID's own trust domain's
// roots, "" when each trust domain has its file (SPIFFE).
func (n Names) ownBundleFile() string {
	if n.Layout == LayoutSPIFFE {
		return ""
	}
	return n.Bundle
}

// bundleFile is the file a reader finds td's roots in, td being the
// SVID's own trust domain.
func (n Names) bundleFile(own spiffeid.TrustDomain) string {
	if n.Layout == LayoutSPIFFE {
		return trustBundleFile(own)
	}
	return n.Bundle
}

// bundleDir is the directory whose entries name one trust domain's
// bundle each: the federated directory of SPIFFEHelper, the folder itself
// in SPIFFE.
func (n Names) bundleDir() string {
	if n.Layout == LayoutSPIFFE {
		return "."
	}
	return FederatedDirName
}

// bundleTrustDomain reports whether name, an entry of BundleDir, is a
// trust domain's bundle file and whose. Names that do not carry a valid
// trust domain are not ours.
func (n Names) bundleTrustDomain(name string) (spiffeid.TrustDomain, bool) {
	suffix := FederatedBundleSuffix
	if n.Layout == LayoutSPIFFE {
		suffix = TrustBundleSuffix
	}
	base, ok := strings.CutSuffix(name, suffix)
	if !ok || base == "" {
		return spiffeid.TrustDomain{}, false
	}
	td, err := spiffeid.TrustDomainFromString(base)
	if err != nil || td.Name() != base {
		return spiffeid.TrustDomain{}, false
	}
	return td, true
}

// perTrustDomainFile is the name, relative to the folder, of td's own
// bundle file: in BundleDir.
func (n Names) perTrustDomainFile(td spiffeid.TrustDomain) string {
	if n.Layout == LayoutSPIFFE {
		return trustBundleFile(td)
	}
	return FederatedDirName + "/" + td.Name() + FederatedBundleSuffix
}

// required are the stable names a consumer of the layout opens, own
// being the SVID's trust domain.
func (n Names) required(own spiffeid.TrustDomain) []string {
	if n.Layout == LayoutSPIFFE {
		return []string{CredentialFileName, trustBundleFile(own)}
	}
	return []string{n.Cert, n.Key, n.Bundle}
}

// trustBundleFile is the SPIFFE file name of td's bundle.
func trustBundleFile(td spiffeid.TrustDomain) string { return td.Name() + TrustBundleSuffix }

// validFileName keeps configured names inside the folder and away from the
// names the swap machinery reserves ("..data", generation directories).
func validFileName(name string) error {
	switch {
	case name == "":
		return errors.New("missing: a file name is needed")
	case name != filepath.Base(name) || strings.ContainsRune(name, '/'):
		return errors.New("must be a plain file name, not a path")
	case name == ".":
		return errors.New("is the folder itself, not a file name")
	case strings.HasPrefix(name, ".."):
		return errors.New(`must not start with ".." (reserved for generation directories)`)
	}
	return nil
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

// fill completes names from what the marker says the folder was written
// with: the layout when none is given, and for that same layout the file
// names not given, if they are plain file names (the folder may be
// writable by its consumer). A nil marker changes nothing.
func (m *marker) fill(names Names) Names {
	if m == nil || (names.Layout != "" && names.Layout != m.Layout) {
		return names
	}
	names.Layout = cmp.Or(names.Layout, m.Layout)
	if m.Layout != LayoutSPIFFEHelper {
		return names
	}
	for _, n := range []struct {
		dst *string
		v   string
	}{{&names.Cert, m.CertFileName}, {&names.Key, m.KeyFileName}, {&names.Bundle, m.BundleFileName}} {
		if *n.dst == "" && validFileName(n.v) == nil {
			*n.dst = n.v
		}
	}
	return names
}
