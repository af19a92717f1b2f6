package layout

import (
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Content is what one SVID puts into a folder, PEM-encoded.
type Content struct {
	Key   []byte // PKCS#8
	Chain []byte // leaf, then intermediates (never a root)
	// Intermediates are the chain without its leaf.
	Intermediates []byte
	Own           spiffeid.TrustDomain
	// Bundles are the roots of every trust domain that has any, own
	// included, in the order they are written.
	Bundles []Bundle
}

// Bundle is one trust domain's roots.
type Bundle struct {
	TrustDomain spiffeid.TrustDomain
	Roots       []byte
}

// Options are the SPIFFEHelper choices of what goes where.
type Options struct {
	// Federated writes FederatedDirName/<td>.pem per federated trust
	// domain; Concatenate also appends those roots to the bundle file.
	Federated, Concatenate bool
	// Intermediates appends the chain's intermediates to the bundle file.
	Intermediates bool
}

// File is one file of a generation; its name may have one directory
// level. Secret files hold the private key.
type File struct {
	Name   string
	Data   []byte
	Secret bool
}

// Files are the files (and the directories, made even when empty, as
// consumers may point at them) the layout writes for c.
func (n Names) Files(c Content, o Options) (files []File, dirs []string) {
	if n.Kind == SPIFFE {
		cred := make([]byte, 0, len(c.Key)+len(c.Chain))
		files = []File{{Name: CredentialFileName, Data: append(append(cred, c.Key...), c.Chain...), Secret: true}}
		// One file per trust domain, never concatenated: the standard lets
		// a consumer pick the trust domains it accepts by file name.
		for _, b := range c.Bundles {
			files = append(files, File{Name: TrustBundleFile(b.TrustDomain), Data: b.Roots})
		}
		return files, nil
	}
	var bundle []byte
	var federated []File
	for _, b := range c.Bundles {
		if b.TrustDomain == c.Own {
			bundle = slices.Clone(b.Roots)
		}
	}
	if o.Intermediates {
		bundle = append(bundle, c.Intermediates...)
	}
	if o.Federated {
		dirs = []string{FederatedDirName}
		for _, b := range c.Bundles {
			if b.TrustDomain == c.Own {
				continue
			}
			federated = append(federated, File{Name: n.PerTrustDomainFile(b.TrustDomain), Data: b.Roots})
			if o.Concatenate {
				bundle = append(bundle, b.Roots...)
			}
		}
	}
	files = []File{{Name: n.Cert, Data: c.Chain}, {Name: n.Key, Data: c.Key, Secret: true}, {Name: n.Bundle, Data: bundle}}
	return append(files, federated...), dirs
}
