//go:build e2e

package e2e

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Credential folder layouts as the bridge writes them.
const (
	layoutHelper = "spiffe-helper" // svid.pem, svid_key.pem, svid_bundle.pem
	layoutSPIFFE = "spiffe"        // credential-bundle.private-key.pem + <td>.spiffe-trust-bundle.pem
)

// Stable names in a credential folder.
const (
	helperCert   = "svid.pem"
	helperKey    = "svid_key.pem"
	helperBundle = "svid_bundle.pem"
	spiffeCred   = "credential-bundle.private-key.pem"
)

func spiffeBundleName(td spiffeid.TrustDomain) string { return td.Name() + ".spiffe-trust-bundle.pem" }

// folder reads a credential folder the way its consumers do: by the stable
// names, afresh on every call. It is an x509svid.Source and an
// x509bundle.Source, so a go-spiffe TLS config built on it picks up each
// rotation on the next handshake, as libpq does with sslcert/sslkey.
type folder struct {
	Dir    string
	Layout string
	TD     spiffeid.TrustDomain
}

var (
	_ x509svid.Source   = folder{}
	_ x509bundle.Source = folder{}
)

// GetX509SVID reads the leaf, chain and key.
func (f folder) GetX509SVID() (*x509svid.SVID, error) {
	switch f.Layout {
	case layoutHelper:
		// Certificate and key are two files: read both from one resolved
		// data dir when the folder has one, so a swap between the two
		// opens cannot pair a new certificate with an old key.
		base := f.Dir
		if target, err := filepath.EvalSymlinks(filepath.Join(f.Dir, "..data")); err == nil {
			base = target
		}
		svid, err := x509svid.Load(filepath.Join(base, helperCert), filepath.Join(base, helperKey))
		if err != nil {
			return nil, fmt.Errorf("e2e: read SVID from %s: %w", f.Dir, err)
		}
		return svid, nil
	case layoutSPIFFE:
		data, err := os.ReadFile(filepath.Join(f.Dir, spiffeCred))
		if err != nil {
			return nil, fmt.Errorf("e2e: read SVID from %s: %w", f.Dir, err)
		}
		// The SPIFFE filesystem format puts the key first, then the chain.
		var certs, keys []byte
		for rest := data; ; {
			var b *pem.Block
			b, rest = pem.Decode(rest)
			if b == nil {
				break
			}
			switch b.Type {
			case "CERTIFICATE":
				certs = append(certs, pem.EncodeToMemory(b)...)
			case "PRIVATE KEY":
				if len(keys) > 0 {
					return nil, fmt.Errorf("e2e: %s holds more than one key", spiffeCred)
				}
				if len(certs) > 0 {
					return nil, fmt.Errorf("e2e: %s: key after certificates", spiffeCred)
				}
				keys = pem.EncodeToMemory(b)
			default:
				return nil, fmt.Errorf("e2e: %s: unexpected PEM block %q", spiffeCred, b.Type)
			}
		}
		svid, err := x509svid.Parse(certs, keys)
		if err != nil {
			return nil, fmt.Errorf("e2e: parse SVID in %s: %w", f.Dir, err)
		}
		return svid, nil
	default:
		return nil, fmt.Errorf("e2e: unknown layout %q", f.Layout)
	}
}

// BundlePath is the file holding the trust domain's roots.
func (f folder) BundlePath() string {
	if f.Layout == layoutSPIFFE {
		return filepath.Join(f.Dir, spiffeBundleName(f.TD))
	}
	return filepath.Join(f.Dir, helperBundle)
}

// GetX509BundleForTrustDomain reads the bundle of td.
func (f folder) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != f.TD {
		return nil, fmt.Errorf("e2e: folder %s has no bundle for %q", f.Dir, td)
	}
	b, err := x509bundle.Load(td, f.BundlePath())
	if err != nil {
		return nil, fmt.Errorf("e2e: read bundle from %s: %w", f.Dir, err)
	}
	return b, nil
}

// Leaf reads the current leaf certificate. It opens one file only: reading
// the certificate and the key by their stable names is two opens, which a
// swap may fall between.
func (f folder) Leaf() (*x509.Certificate, error) {
	if f.Layout == layoutHelper {
		certs, err := parseCertsFile(filepath.Join(f.Dir, helperCert))
		if err != nil {
			return nil, err
		}
		return certs[0], nil
	}
	svid, err := f.GetX509SVID()
	if err != nil {
		return nil, err
	}
	return svid.Certificates[0], nil
}

// writePlainFolder writes svid and bundle as plain files in layout, the way
// another helper (or a previous pod) would have left them: no symlinks, no
// marker. The key is 0600 and everything belongs to owner when set.
func writePlainFolder(t testing.TB, f folder, svid *x509svid.SVID, bundle *x509bundle.Bundle, owner *osUser) {
	t.Helper()
	certPEM, keyPEM, err := svid.Marshal()
	if err != nil {
		t.Fatalf("e2e: marshal SVID: %v", err)
	}
	bundlePEM, err := bundle.Marshal()
	if err != nil {
		t.Fatalf("e2e: marshal bundle: %v", err)
	}
	switch f.Layout {
	case layoutHelper:
		writeFile(t, filepath.Join(f.Dir, helperCert), certPEM, 0o644, owner)
		writeFile(t, filepath.Join(f.Dir, helperKey), keyPEM, 0o600, owner)
		writeFile(t, filepath.Join(f.Dir, helperBundle), bundlePEM, 0o644, owner)
	case layoutSPIFFE:
		writeFile(t, filepath.Join(f.Dir, spiffeCred), append(keyPEM, certPEM...), 0o600, owner)
		writeFile(t, filepath.Join(f.Dir, spiffeBundleName(bundle.TrustDomain())), bundlePEM, 0o644, owner)
	default:
		t.Fatalf("e2e: unknown layout %q", f.Layout)
	}
}

// findBytes walks dir (following nothing) and returns the regular files
// whose content contains needle.
func findBytes(dir string, needle []byte) ([]string, error) {
	var hits []string
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(data, needle) {
			hits = append(hits, path)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("e2e: walk %s: %w", dir, err)
	}
	return hits, nil
}

// isSymlink reports whether path is a symbolic link.
func isSymlink(path string) (bool, error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return fi.Mode()&os.ModeSymlink != 0, nil
}

// parseCertsFile reads every certificate of a PEM file.
func parseCertsFile(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("e2e: read %s: %w", path, err)
	}
	var certs []*x509.Certificate
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("e2e: parse %s: %w", path, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("e2e: no certificate in %s", path)
	}
	return certs, nil
}
