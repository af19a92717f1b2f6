package rotation

import (
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/sds-bridge/sds-bridge/internal/devapi"
)

// NewUpdate refuses every shape a sink would otherwise have to check for
// (no SVID, an SVID without a certificate, a missing or empty bundle of an
// SVID's trust domain, a nil or repeated bundle), so sinks can trust an
// Update without checking again.
func TestNewUpdateRefusesWhatSinksMustNotSee(t *testing.T) {
	own, err := devapi.NewCA(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	partnerTD := spiffeid.RequireTrustDomainFromString("partner.test")
	partner, err := devapi.NewCA(partnerTD, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	svid, err := own.Issue(svcID, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	partnerSVID, err := partner.Issue(spiffeid.RequireFromPath(partnerTD, "/p"), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	noCert := &x509svid.SVID{ID: svcID, PrivateKey: svid.PrivateKey}

	for _, tc := range []struct {
		name    string
		svids   []*x509svid.SVID
		bundles []*x509bundle.Bundle
		wantErr string
	}{
		{"no SVIDs", nil, []*x509bundle.Bundle{own.Bundle()}, "update has no SVIDs"},
		{"an SVID without a certificate", []*x509svid.SVID{svid, noCert}, []*x509bundle.Bundle{own.Bundle()}, "without a certificate"},
		{"no own bundle", []*x509svid.SVID{svid}, []*x509bundle.Bundle{partner.Bundle()}, `no bundle for own trust domain "example.org"`},
		{"empty own bundle", []*x509svid.SVID{svid}, []*x509bundle.Bundle{x509bundle.New(td)}, `no bundle for own trust domain "example.org"`},
		{"no bundle for a second SVID's trust domain", []*x509svid.SVID{svid, partnerSVID}, []*x509bundle.Bundle{own.Bundle()}, `no bundle for own trust domain "partner.test"`},
		{"nil bundle", []*x509svid.SVID{svid}, []*x509bundle.Bundle{own.Bundle(), nil}, "nil bundle"},
		{"two bundles of one trust domain", []*x509svid.SVID{svid}, []*x509bundle.Bundle{own.Bundle(), own.Bundle()}, `two bundles for trust domain "example.org"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := NewUpdate(1, tc.svids, tc.bundles, time.Now())
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("NewUpdate = %v, %v; want an error containing %q", u, err, tc.wantErr)
			}
		})
	}
}

// NewUpdate sorts bundles by trust domain name into its own slice (the
// caller's is left as it was), keeps the SVIDs' order and carries the
// generation and receipt time through.
func TestNewUpdateSortsBundlesAndKeepsTheRest(t *testing.T) {
	tds := []string{"zeta.test", "example.org", "alpha.test"}
	var bundles []*x509bundle.Bundle
	for _, name := range tds {
		c, err := devapi.NewCA(spiffeid.RequireTrustDomainFromString(name), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		bundles = append(bundles, c.Bundle())
	}
	own, err := devapi.NewCA(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	bundles[1] = own.Bundle()
	first, err := own.Issue(spiffeid.RequireFromPath(td, "/z"), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	second, err := own.Issue(spiffeid.RequireFromPath(td, "/a"), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

	u, err := NewUpdate(7, []*x509svid.SVID{first, second}, bundles, at)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, b := range u.Bundles {
		got = append(got, b.TrustDomain().Name())
	}
	if strings.Join(got, " ") != "alpha.test example.org zeta.test" {
		t.Errorf("bundles in order %v, want alpha.test example.org zeta.test", got)
	}
	if bundles[0].TrustDomain().Name() != "zeta.test" {
		t.Errorf("the caller's slice was reordered")
	}
	if u.DefaultSVID() != first || u.SVIDs[1] != second {
		t.Errorf("SVID order changed")
	}
	if u.Generation != 7 || !u.ReceivedAt.Equal(at) || !u.OwnBundle().Equal(own.Bundle()) {
		t.Errorf("generation %d, received %s, own bundle %v", u.Generation, u.ReceivedAt, u.OwnBundle())
	}
}
