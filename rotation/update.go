// Package rotation watches the SPIFFE Workload API, validates every X.509
// context it receives and fans the same immutable Update out to every sink.
package rotation

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Update is one validated Workload API X.509 context, shared by every sink
// and never modified. Sinks rely on its invariants without checking again.
type Update struct {
	// Generation increases by one per Update this process publishes.
	Generation uint64
	// SVIDs holds at least one SVID, each with its leaf first; SVIDs[0] is
	// the default one.
	SVIDs []*x509svid.SVID
	// Bundles holds one bundle per trust domain, sorted by name; every
	// SVID's trust domain has one with an X.509 authority.
	Bundles    []*x509bundle.Bundle
	ReceivedAt time.Time
}

// NewUpdate builds an Update from parts (tests, a library user), checking
// the invariants but not the certificates; svids keeps its order. The
// Source does not call it: Validate has checked what the Workload API sent.
func NewUpdate(generation uint64, svids []*x509svid.SVID, bundles []*x509bundle.Bundle, receivedAt time.Time) (*Update, error) {
	if len(svids) == 0 {
		return nil, errors.New("update has no SVIDs")
	}
	set := x509bundle.NewSet()
	for _, b := range bundles {
		switch {
		case b == nil:
			return nil, errors.New("update has a nil bundle")
		case set.Has(b.TrustDomain()):
			return nil, fmt.Errorf("update has two bundles for trust domain %q", b.TrustDomain().Name())
		}
		set.Add(b)
	}
	u := &Update{Generation: generation, SVIDs: svids, Bundles: set.Bundles(), ReceivedAt: receivedAt}
	for _, svid := range svids {
		if svid == nil || len(svid.Certificates) == 0 {
			return nil, errors.New("update has an SVID without a certificate")
		}
		td := svid.ID.TrustDomain()
		if b, ok := u.Bundle(td); !ok || len(b.X509Authorities()) == 0 {
			return nil, fmt.Errorf("no bundle for own trust domain %q of SVID %s", td.Name(), svid.ID)
		}
	}
	return u, nil
}

// DefaultSVID is the SVID served as "default" and written to folders.
func (u *Update) DefaultSVID() *x509svid.SVID { return u.SVIDs[0] }

// TrustDomain is the default SVID's own trust domain.
func (u *Update) TrustDomain() spiffeid.TrustDomain { return u.SVIDs[0].ID.TrustDomain() }

// Bundle returns the bundle of td, if the Workload API sent one.
func (u *Update) Bundle(td spiffeid.TrustDomain) (*x509bundle.Bundle, bool) {
	for _, b := range u.Bundles {
		if b.TrustDomain() == td {
			return b, true
		}
	}
	return nil, false
}

// OwnBundle is the bundle of the default SVID's trust domain.
func (u *Update) OwnBundle() *x509bundle.Bundle {
	b, _ := u.Bundle(u.TrustDomain())
	return b
}

// Leaf is the default SVID's leaf certificate.
func (u *Update) Leaf() *x509.Certificate { return u.SVIDs[0].Certificates[0] }

// Sink receives every Update, on one goroutine per sink; a slow sink only
// delays itself and skips to the newest Update.
type Sink interface {
	// Name identifies the sink in logs, readiness and metrics ("sds", "files:/dir").
	Name() string
	// Apply delivers u. A failed u is applied again with backoff until it
	// succeeds or a newer one replaces it (unless ErrUpdateInPlace), so
	// Apply must be safe to repeat.
	Apply(ctx context.Context, u *Update) error
}

// Paced is a Sink that takes at most one Update per MinApplyInterval (a
// folder, whose every swap reloads a consumer): faster ones are coalesced
// and the newest applied, retries included, once the interval has passed.
type Paced interface {
	Sink
	MinApplyInterval() time.Duration
}
