package filesink

import (
	"crypto/x509"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/sds-bridge/sds-bridge/rotation"
)

// omitExpired is u without certificates expired at now in the chains and
// bundles, as spiffe-helper's omit_expired: some consumers refuse a CA file
// with an old CA SPIRE has not pruned yet. Leaves stay (chooseSVID refuses
// an expired one). u is shared with every sink and not changed.
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

// unexpired uses spiffe-helper's test, now.After(cert.NotAfter).
func unexpired(certs []*x509.Certificate, now time.Time) []*x509.Certificate {
	return slices.DeleteFunc(slices.Clone(certs), func(c *x509.Certificate) bool { return now.After(c.NotAfter) })
}
