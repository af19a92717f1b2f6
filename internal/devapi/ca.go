package devapi

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net/url"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// CA is an in-memory SPIFFE CA signing X.509-SVIDs of one trust domain
// with a self-signed root, for `sds-bridge dev` and tests: nothing real.
type CA struct {
	td   spiffeid.TrustDomain
	root *x509.Certificate
	key  crypto.Signer

	mu     sync.Mutex
	serial int64
}

// NewCA creates a CA for td whose root is valid for rootTTL from now (minus a
// minute of clock-skew slack).
func NewCA(td spiffeid.TrustDomain, rootTTL time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate root key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"sds-bridge development CA"}, CommonName: td.Name()},
		URIs:                  []*url.URL{td.ID().URL()},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(rootTTL),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create root: %w", err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse root: %w", err)
	}
	return &CA{td: td, root: root, key: key, serial: 1}, nil
}

// TrustDomain is the CA's trust domain.
func (c *CA) TrustDomain() spiffeid.TrustDomain { return c.td }

// Root is the CA's self-signed root certificate.
func (c *CA) Root() *x509.Certificate { return c.root }

// Bundle is the trust bundle holding the CA's root.
func (c *CA) Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(c.td, []*x509.Certificate{c.root})
}

// SVIDOptions shape an issued SVID. The zero value gives a valid SVID.
type SVIDOptions struct {
	// NotBefore defaults to now minus 10 s, as SPIRE back-dates its SVIDs.
	NotBefore time.Time
	// NotAfter defaults to now+ttl, whatever NotBefore is.
	NotAfter time.Time
	// Hint is copied into the Workload API response by callers that serve it.
	Hint string
}

// Issue signs a new X.509-SVID for id valid for ttl from now.
func (c *CA) Issue(id spiffeid.ID, ttl time.Duration) (*x509svid.SVID, error) {
	return c.IssueWith(id, ttl, SVIDOptions{})
}

// IssueWith signs a new X.509-SVID for id; opts override the validity window.
func (c *CA) IssueWith(id spiffeid.ID, ttl time.Duration, opts SVIDOptions) (*x509svid.SVID, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	// X.509 keeps whole seconds: counting from now rounded down would cut
	// up to a second off a short SVID's life, and dev's rotation at half
	// the ttl would then leave a folder milliseconds to swap before expiry.
	from := time.Now().Add(time.Second - 1).Truncate(time.Second)
	notBefore, notAfter := from.Add(-10*time.Second), from.Add(ttl)
	if !opts.NotBefore.IsZero() {
		notBefore = opts.NotBefore
	}
	if !opts.NotAfter.IsZero() {
		notAfter = opts.NotAfter
	}
	c.mu.Lock()
	c.serial++
	serial := c.serial
	c.mu.Unlock()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{Organization: []string{"SPIFFE"}},
		URIs:                  []*url.URL{id.URL()},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.root, key.Public(), c.key)
	if err != nil {
		return nil, fmt.Errorf("sign SVID for %s: %w", id, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse SVID for %s: %w", id, err)
	}
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf}, PrivateKey: key, Hint: opts.Hint}, nil
}
