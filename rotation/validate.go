package rotation

import (
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/sds-bridge/sds-bridge/internal/certcheck"
)

// ErrRefused marks an X.509 context that failed validation; the wrapped
// message says which SVID and why.
var ErrRefused = errors.New("refused")

// Validate checks that every SVID's chain verifies at now against its own
// trust domain's bundle, each certificate's window included (x509svid.ParseRaw
// already matched key and leaf). Any failure refuses the whole context, so
// sinks never hold a mix. It returns the bundles sorted by trust domain.
func Validate(xc *workloadapi.X509Context, now time.Time) ([]*x509bundle.Bundle, error) {
	if xc == nil || len(xc.SVIDs) == 0 {
		return nil, fmt.Errorf("%w: the Workload API sent no SVID", ErrRefused)
	}
	if xc.Bundles == nil || xc.Bundles.Len() == 0 {
		return nil, fmt.Errorf("%w: the Workload API sent no trust bundle", ErrRefused)
	}
	for _, svid := range xc.SVIDs {
		if err := validateSVID(svid, xc.Bundles, now); err != nil {
			return nil, fmt.Errorf("%w: SVID %s: %w", ErrRefused, svid.ID, err)
		}
	}
	return xc.Bundles.Bundles(), nil
}

func validateSVID(svid *x509svid.SVID, bundles *x509bundle.Set, now time.Time) error {
	td := svid.ID.TrustDomain()
	if _, ok := bundles.Get(td); !ok {
		return fmt.Errorf("no bundle for its trust domain %q", td.Name())
	}
	_, _, err := x509svid.Verify(svid.Certificates, bundles, x509svid.WithTime(now))
	if err == nil {
		return nil
	}
	// crypto/x509 checks the leaf's window first; say which end it missed.
	var invalid x509.CertificateInvalidError
	if errors.As(err, &invalid) && invalid.Reason == x509.Expired && invalid.Cert == svid.Certificates[0] {
		if missed := certcheck.Window(invalid.Cert, now); missed != nil {
			return fmt.Errorf("leaf (serial %x) %w", invalid.Cert.SerialNumber, missed)
		}
	}
	return fmt.Errorf("chain does not verify against the bundle of %q: %w", td.Name(), err)
}

// sameMaterial reports a repeat, as after a reconnect: not a rotation.
func sameMaterial(a *Update, svids []*x509svid.SVID, bundles []*x509bundle.Bundle) bool {
	return a != nil &&
		slices.EqualFunc(a.SVIDs, svids, func(x, y *x509svid.SVID) bool {
			return slices.EqualFunc(x.Certificates, y.Certificates, (*x509.Certificate).Equal)
		}) &&
		slices.EqualFunc(a.Bundles, bundles, (*x509bundle.Bundle).Equal)
}
