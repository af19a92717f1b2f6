// Package rotation watches the SPIFFE Workload API, validates every X.509
// context it receives and fans the same immutable Update out to every sink.
package rotation

import (
	"context"
	"crypto/x509"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Update is one validated Workload API X.509 context. It is shared by every
// sink and must never be modified after it is published.
type Update struct {
	// Generation increases by one for every Update published by this process.
	Generation uint64
	// SVIDs holds every SVID of the workload; SVIDs[0] is the default one.
	SVIDs []*x509svid.SVID
	// Bundles holds one bundle per trust domain (own and federated), sorted
	// by trust domain name.
	Bundles []*x509bundle.Bundle
	// ReceivedAt is when the Workload API delivered the context.
	ReceivedAt time.Time
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

// OwnBundle is the bundle of the default SVID's trust domain; validation
// guarantees it exists.
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
