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

// Validate checks every SVID of xc at time now: its leaf is inside its
// validity window, its key matches the leaf and its chain verifies against
// its own trust domain's bundle from the same context. It returns the
// bundles sorted by trust domain. Any failure refuses the whole context, so
// sinks never hold a mix of good and bad identities.
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
	if len(svid.Certificates) == 0 {
		return errors.New("no certificate")
	}
	leaf := svid.Certificates[0]
	if err := certcheck.Window(leaf, now); err != nil {
		return fmt.Errorf("leaf (serial %x) %w", leaf.SerialNumber, err)
	}
	if err := certcheck.KeyMatches(svid.PrivateKey, leaf); err != nil {
		return err
	}
	if _, ok := bundles.Get(svid.ID.TrustDomain()); !ok {
		return fmt.Errorf("no bundle for its trust domain %q", svid.ID.TrustDomain().Name())
	}
	if err := certcheck.Chain(svid.Certificates, bundles, now); err != nil {
		return fmt.Errorf("chain does not verify against the bundle of %q: %w", svid.ID.TrustDomain().Name(), err)
	}
	return nil
}

// sameMaterial reports whether two updates carry identical SVIDs and bundles,
// as after a Workload API reconnect; such a repeat is not a rotation.
func sameMaterial(a *Update, svids []*x509svid.SVID, bundles []*x509bundle.Bundle) bool {
	return a != nil &&
		slices.EqualFunc(a.SVIDs, svids, func(x, y *x509svid.SVID) bool {
			return slices.EqualFunc(x.Certificates, y.Certificates, (*x509.Certificate).Equal)
		}) &&
		slices.EqualFunc(a.Bundles, bundles, (*x509bundle.Bundle).Equal)
}
