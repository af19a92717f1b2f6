package filesink

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/sds-bridge/sds-bridge/internal/certcheck"
)

// finding is one problem checkSet found.
type finding struct {
	Err  *MaterialError
	Name string // relative to the set's directory
}

// checkSet returns the set in dir, or every problem, the one a consumer
// hits first in front; an expired certificate is not also unverifiable.
// written, dir's marker, gives Material.Generation.
func checkSet(names Names, dir setDir, written *marker, now time.Time, minValidity time.Duration) (*Material, []finding) {
	c := &checker{names: names, dir: dir}
	s := set{bundles: map[spiffeid.TrustDomain][]*x509.Certificate{}}
	c.readCredential(&s)
	c.readBundles(&s)
	m := c.verify(&s, now, minValidity)
	if m == nil || len(c.findings) > 0 {
		return nil, c.findings
	}
	if written != nil && written.Serial == m.Serial {
		m.Generation = written.Generation
	}
	return m, nil
}

// set is what a checker read, before verification.
type set struct {
	certPath, keyPath string
	certs             []*x509.Certificate
	key               crypto.PrivateKey
	bundles           map[spiffeid.TrustDomain][]*x509.Certificate
}

type checker struct {
	names    Names
	dir      setDir
	findings []finding
}

func (c *checker) add(name string, r *Reason, detail string, cause error) {
	err := &MaterialError{Reason: r, Path: c.dir.join(name), Detail: oneLine(detail), Err: cause}
	c.findings = append(c.findings, finding{Err: err, Name: name})
}

// read reads name; a problem is a finding.
func (c *checker) read(name string) (data []byte, path string, ok bool) {
	path = c.dir.join(name)
	data, err := c.dir.read(name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		c.add(name, ErrMissing, "missing file "+path, err)
	case notAFile(err):
		c.add(name, ErrMalformed, fmt.Sprintf("cannot read %s: %v", path, err), err)
	case err != nil:
		c.add(name, ErrUnreadable, fmt.Sprintf("cannot read %s: %v", path, err), err)
	}
	return data, path, err == nil
}

// readCredential reads the chain and the key: one file or two.
func (c *checker) readCredential(s *set) {
	certFile, keyFile := c.names.certFile(), c.names.keyFile()
	var err error
	if certFile == keyFile {
		if data, path, ok := c.read(certFile); ok {
			s.certPath, s.keyPath = path, path
			if s.certs, s.key, err = certcheck.ParseCredential(data); err != nil {
				c.add(certFile, ErrMalformed, fmt.Sprintf("%s: cannot parse key and chain: %v", path, err), err)
			}
		}
		return
	}
	if data, path, ok := c.read(certFile); ok {
		s.certPath = path
		if s.certs, err = certcheck.ParseCerts(data); err != nil {
			c.add(certFile, ErrMalformed, fmt.Sprintf("%s: cannot parse certificate chain: %v", path, err), err)
		}
	}
	if data, path, ok := c.read(keyFile); ok {
		s.keyPath = path
		if s.key, err = certcheck.ParseKey(data); err != nil {
			c.add(keyFile, ErrMalformed, fmt.Sprintf("%s: cannot parse private key: %v", path, err), err)
		}
	}
}

// readBundles reads the own bundle file, which wins, and every per-trust-
// domain file; one that cannot be read (a dangling link) is none.
func (c *checker) readBundles(s *set) {
	if own := c.names.ownBundleFile(); own != "" {
		if data, path, ok := c.read(own); ok {
			roots, err := certcheck.ParseCerts(data)
			if err != nil {
				c.add(own, ErrMalformed, fmt.Sprintf("%s: cannot parse bundle: %v", path, err), err)
			} else if len(s.certs) > 0 {
				if id, err := x509svid.IDFromCert(s.certs[0]); err == nil {
					s.bundles[id.TrustDomain()] = roots
				}
			}
		}
	}
	dirName := c.names.bundleDir()
	for _, e := range c.dir.readDir(dirName) {
		td, ok := c.names.bundleTrustDomain(e.Name())
		if !ok {
			continue
		}
		name := path.Join(dirName, e.Name())
		data, err := c.dir.read(name)
		if err != nil {
			continue
		}
		roots, err := certcheck.ParseCerts(data)
		if err != nil {
			c.add(name, ErrMalformed, fmt.Sprintf("%s: cannot parse bundle: %v", c.dir.join(name), err), err)
			continue
		}
		if _, have := s.bundles[td]; !have {
			s.bundles[td] = roots
		}
	}
}

// verify checks the set as a consumer would: an X.509-SVID in its validity
// window, its key, its chain, and at least minValidity left.
func (c *checker) verify(s *set, now time.Time, minValidity time.Duration) *Material {
	if len(s.certs) == 0 {
		return nil
	}
	leaf := s.certs[0]
	serial := leaf.SerialNumber.Text(16)
	credential := c.names.certFile()
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		c.add(credential, ErrMalformed, fmt.Sprintf("%s: certificate (serial %s) is not an X.509-SVID: %v", s.certPath, serial, err), err)
		return nil
	}
	what := fmt.Sprintf("%s: certificate %s (serial %s)", s.certPath, id, serial)
	if err := certcheck.Window(leaf, now); err != nil {
		reason := ErrExpired
		if errors.Is(err, certcheck.ErrNotYetValid) {
			reason = ErrNotYetValid
		}
		c.add(credential, reason, fmt.Sprintf("%s %v", what, err), nil)
		return nil
	}
	if s.key != nil && certcheck.KeyMatches(s.key, leaf) != nil {
		c.add(c.names.keyFile(), ErrKeyMismatch,
			fmt.Sprintf("%s: private key does not match certificate %s (serial %s) in %s", s.keyPath, id, serial, s.certPath), nil)
		return nil
	}
	if !c.verifyChain(s, id.TrustDomain(), what, now) {
		return nil
	}
	if remaining := leaf.NotAfter.Sub(now); remaining < minValidity {
		c.add(credential, ErrExpiringSoon, fmt.Sprintf("%s valid for only %s more (until %s), less than the required %s",
			what, remaining.Round(time.Second), leaf.NotAfter.UTC().Format(time.RFC3339), minValidity), nil)
	}
	if s.key == nil {
		return nil
	}
	return &Material{Dir: c.dir.path, SPIFFEID: id, Serial: serial, NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter,
		TrustDomains: slices.SortedFunc(maps.Keys(s.bundles), spiffeid.TrustDomain.Compare)}
}

// verifyChain checks the chain against td's bundle; no bundle is as bad as
// a chain that does not verify.
func (c *checker) verifyChain(s *set, td spiffeid.TrustDomain, what string, now time.Time) bool {
	credential := c.names.certFile()
	bundleName := c.names.bundleFile(td)
	roots, ok := s.bundles[td]
	if !ok {
		if err := c.dir.stat(bundleName); c.names.ownBundleFile() == "" && errors.Is(err, fs.ErrNotExist) {
			c.add(bundleName, ErrMissing, "missing file "+c.dir.join(bundleName), err)
		}
		c.add(credential, ErrUntrusted, fmt.Sprintf("%s cannot be verified: no usable bundle %s", what, c.dir.join(bundleName)), nil)
		return false
	}
	if err := certcheck.Chain(s.certs, x509bundle.FromX509Authorities(td, roots), now); err != nil {
		c.add(credential, ErrUntrusted, fmt.Sprintf("%s: chain does not verify against bundle %s: %v", what, c.dir.join(bundleName), err), err)
		return false
	}
	return true
}

// maxFileSize: a real set is a few KiB; a planted link to /dev/zero must
// not exhaust memory.
const maxFileSize = 1 << 20

// setDir is a directory a set is read from: a handle that keeps every read
// inside it (or err), and its path for messages.
type setDir struct {
	root     *os.Root
	err      error
	path     string
	borrowed bool // root is someone else's to close
}

// openSetDir opens name inside parent, or the path name if parent is nil.
func openSetDir(parent *os.Root, name, path string) setDir {
	d := setDir{path: path}
	if parent == nil {
		d.root, d.err = os.OpenRoot(name)
	} else {
		d.root, d.err = parent.OpenRoot(name)
	}
	return d
}

func (d setDir) Close() {
	if d.root != nil && !d.borrowed {
		d.root.Close()
	}
}

func (d setDir) join(name string) string { return filepath.Join(d.path, name) }

func (d setDir) read(name string) ([]byte, error) {
	if d.root == nil {
		return nil, d.err
	}
	return readIn(d.root, name, maxFileSize)
}

// readDir lists the directory name, sorted; nothing if it cannot be read.
func (d setDir) readDir(name string) []fs.DirEntry {
	if d.root == nil {
		return nil
	}
	entries, _ := readDirSorted(d.root, name)
	return entries
}

func (d setDir) stat(name string) error {
	if d.root == nil {
		return d.err
	}
	_, err := d.root.Stat(name)
	return err
}

// notAFile reports a FIFO, device, huge file or link out of the folder.
func notAFile(err error) bool {
	return errors.Is(err, errNotRegular) || errors.Is(err, errTooLarge) || errors.Is(err, errOutside)
}
