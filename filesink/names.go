// The names in a credential folder, shared by the writer and the reader:
// each layout's files, the marker that describes a generation, and the
// link that names the current one.

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
	// LayoutSPIFFEHelper (the default) writes what spiffe-helper does.
	LayoutSPIFFEHelper Layout = "spiffe-helper"
	// LayoutSPIFFE is the SPIFFE Filesystem Delivery standard: the key and
	// chain in one file, one bundle file per trust domain.
	LayoutSPIFFE Layout = "spiffe"
)

// The names of a folder.
const (
	DefaultCertFileName   = "svid.pem"
	DefaultKeyFileName    = "svid_key.pem"
	DefaultBundleFileName = "svid_bundle.pem"

	// MarkerFileName describes the generation, in every layout.
	MarkerFileName     = "sds-bridge.json"
	CredentialFileName = "credential-bundle.private-key.pem"
	TrustBundleSuffix  = ".spiffe-trust-bundle.pem"

	// FederatedDirName holds LayoutSPIFFEHelper's <td>.pem federated bundles.
	FederatedDirName      = "federated"
	FederatedBundleSuffix = ".pem"

	// DataLink is the symlink that names the current generation directory.
	DataLink = "..data"
)

// Names are the managed names of one folder: its layout and, for
// LayoutSPIFFEHelper, the three configurable file names.
type Names struct {
	Layout            Layout
	Cert, Key, Bundle string // LayoutSPIFFEHelper only
}

// WithDefaults fills the layout and LayoutSPIFFEHelper's file names; an
// unknown layout is an error.
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

// pick is spiffe in LayoutSPIFFE, helper in LayoutSPIFFEHelper.
func (n Names) pick(spiffe, helper string) string {
	if n.Layout == LayoutSPIFFE {
		return spiffe
	}
	return helper
}

// certFile holds the chain; keyFile the private key (one file in LayoutSPIFFE).
func (n Names) certFile() string { return n.pick(CredentialFileName, n.Cert) }
func (n Names) keyFile() string  { return n.pick(CredentialFileName, n.Key) }

// ownBundleFile holds only the own trust domain's roots; "" in LayoutSPIFFE.
func (n Names) ownBundleFile() string { return n.pick("", n.Bundle) }

// bundleFile is where a reader finds own's roots, own being the SVID's
// trust domain.
func (n Names) bundleFile(own spiffeid.TrustDomain) string {
	return n.pick(n.perTrustDomainFile(own), n.Bundle)
}

// bundleDir holds one bundle file per trust domain.
func (n Names) bundleDir() string { return n.pick(".", FederatedDirName) }

// bundleTrustDomain reports whose bundle file name, in bundleDir, is; a
// name without a valid trust domain is not ours.
func (n Names) bundleTrustDomain(name string) (spiffeid.TrustDomain, bool) {
	base, ok := strings.CutSuffix(name, n.pick(TrustBundleSuffix, FederatedBundleSuffix))
	if !ok || base == "" {
		return spiffeid.TrustDomain{}, false
	}
	td, err := spiffeid.TrustDomainFromString(base)
	if err != nil || td.Name() != base {
		return spiffeid.TrustDomain{}, false
	}
	return td, true
}

// perTrustDomainFile is td's bundle file in bundleDir, relative to the folder.
func (n Names) perTrustDomainFile(td spiffeid.TrustDomain) string {
	return n.pick(td.Name()+TrustBundleSuffix, FederatedDirName+"/"+td.Name()+FederatedBundleSuffix)
}

// required are the stable names a consumer of the layout opens.
func (n Names) required(own spiffeid.TrustDomain) []string {
	if n.Layout == LayoutSPIFFE {
		return []string{CredentialFileName, n.perTrustDomainFile(own)}
	}
	return []string{n.Cert, n.Key, n.Bundle}
}

// validFileName keeps configured names inside the folder and away from the
// swap's reserved ".." names.
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
	// SVID (the folder's choice) and Hint (the SVID's) tell another choice's set.
	SVID string `json:"svid,omitempty"`
	Hint string `json:"hint,omitempty"`
	// The layout and file names let `check --dir` read the folder unaided.
	Layout         Layout `json:"layout,omitempty"`
	CertFileName   string `json:"cert_file_name,omitempty"`
	KeyFileName    string `json:"key_file_name,omitempty"`
	BundleFileName string `json:"bundle_file_name,omitempty"`
}

// fill completes names from the marker (nil: nothing), checking file names:
// the consumer may be able to write the folder.
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
