package rotation

import (
	"crypto"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// FuzzValidate parses arbitrary certificate, key and bundle bytes (DER as
// the Workload API sends them, or PEM) the way go-spiffe does, and
// validates the context at an arbitrary offset from the leaf's NotBefore.
// No input may panic; whatever passes must be what Validate promises: a
// leaf inside its window, the key of the leaf, a chain that verifies
// against the own trust domain's bundle.
func FuzzValidate(f *testing.F) {
	f.Add([]byte{}, []byte{}, []byte{}, int64(0))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n"), []byte{0x30, 0x00}, []byte{0x30, 0x82}, int64(-1))
	f.Fuzz(func(t *testing.T, certs, key, bundle []byte, offset int64) {
		svid, err := x509svid.ParseRaw(certs, key)
		if err != nil {
			if svid, err = x509svid.Parse(certs, key); err != nil {
				return
			}
		}
		td := svid.ID.TrustDomain()
		b, err := x509bundle.ParseRaw(td, bundle)
		if err != nil {
			if b, err = x509bundle.Parse(td, bundle); err != nil {
				return
			}
		}
		leaf := svid.Certificates[0]
		now := leaf.NotBefore.Add(time.Duration(offset % int64(100*365*24*time.Hour)))
		xc := &workloadapi.X509Context{SVIDs: []*x509svid.SVID{svid}, Bundles: x509bundle.NewSet(b)}
		bundles, err := Validate(xc, now)
		if err != nil {
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("refusal %v does not wrap ErrRefused", err)
			}
			return
		}
		if len(bundles) != 1 || bundles[0].TrustDomain() != td {
			t.Errorf("bundles %v", bundles)
		}
		if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
			t.Errorf("accepted a leaf outside %s..%s at %s", leaf.NotBefore, leaf.NotAfter, now)
		}
		if pub, ok := svid.PrivateKey.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(leaf.PublicKey) {
			t.Errorf("accepted a key that is not the leaf's")
		}
		roots := x509.NewCertPool()
		for _, r := range b.X509Authorities() {
			roots.AddCert(r)
		}
		inter := x509.NewCertPool()
		for _, c := range svid.Certificates[1:] {
			inter.AddCert(c)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("accepted a chain crypto/x509 does not verify: %v", err)
		}
	})
}
