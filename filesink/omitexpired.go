package filesink

import (
	"crypto/x509"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/sds-bridge/sds-bridge/rotation"
)

// omitExpired is u as a folder with omit_expired writes it: every
// certificate expired at now left out of the SVIDs' chains and the
// bundles, as spiffe-helper's writeCerts does. A trust bundle keeps an
// old CA until SPIRE prunes it, and some consumers refuse a CA file that
// holds an expired certificate. Leaves stay: an expired one is refused
// whole (chooseSVID), never written without its certificate. u itself is
// shared with every sink and is not changed; without on it is returned.
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

// unexpired is certs without those whose NotAfter is before now, in
// order: spiffe-helper's test, time.Now().After(cert.NotAfter).
func unexpired(certs []*x509.Certificate, now time.Time) []*x509.Certificate {
	return slices.DeleteFunc(slices.Clone(certs), func(c *x509.Certificate) bool { return now.After(c.NotAfter) })
}
