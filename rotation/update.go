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

// Update is one validated Workload API X.509 context. It is shared by every
// sink and must never be modified after it is published. The Source builds
// it from a validated context, other callers with NewUpdate; either way
// the invariants below hold, and sinks rely on them without checking again.
type Update struct {
	// Generation increases by one for every Update published by this process.
	Generation uint64
	// SVIDs holds every SVID of the workload, at least one, each with at
	// least one certificate (its leaf first); SVIDs[0] is the default one.
	SVIDs []*x509svid.SVID
	// Bundles holds one bundle per trust domain (own and federated), sorted
	// by trust domain name. The trust domain of every SVID has a bundle
	// with at least one X.509 authority.
	Bundles []*x509bundle.Bundle
	// ReceivedAt is when the Workload API delivered the context.
	ReceivedAt time.Time
}

// NewUpdate builds an Update from parts (a sink's tests, a library
// user), checking the shape every sink relies on: at least one SVID, each
// with a certificate; no nil or repeated bundle; a bundle with X.509
// authorities for every SVID's trust domain. bundles go through an
// x509bundle.Set, which sorts them by trust domain name; svids keeps its
// order (the first is the default SVID). It does not verify certificates.
// The Source does not call it: Validate has established all of this for
// what the Workload API sent, whose bundles already are a Set.
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

// OwnBundle is the bundle of the default SVID's trust domain; NewUpdate
// guarantees it exists and is not empty.
func (u *Update) OwnBundle() *x509bundle.Bundle {
	b, _ := u.Bundle(u.TrustDomain())
	return b
}

// Leaf is the default SVID's leaf certificate.
func (u *Update) Leaf() *x509.Certificate { return u.SVIDs[0].Certificates[0] }

// Sink receives every Update. Apply is called from one goroutine per sink,
// never concurrently for the same sink; a slow sink only delays itself and
// is handed the newest Update when it is free again (older ones are skipped).
type Sink interface {
	// Name identifies the sink in logs, readiness and metrics ("sds", "files:/dir").
	Name() string
	// Apply delivers u. An error is recorded and logged, and u is applied
	// again with backoff (Config.RetryBackoff) until it succeeds or a newer
	// Update replaces it, unless the error wraps ErrUpdateInPlace. Apply
	// must therefore be safe to repeat with the same Update.
	Apply(ctx context.Context, u *Update) error
}

// Paced is a Sink that takes at most one Update per MinApplyInterval (a
// credential folder, whose every swap reloads a consumer). Updates that
// come faster are coalesced in the sink's slot: the newest is applied as
// soon as the interval since the previous Apply began has passed, older
// ones are skipped. A retry waits for the interval too.
type Paced interface {
	Sink
	MinApplyInterval() time.Duration
}
