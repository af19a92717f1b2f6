package devapi

import (
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

func TestIssuedSVIDVerifiesAgainstBundle(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	c, err := NewCA(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id := spiffeid.RequireFromPath(td, "/backend")
	svid, err := c.Issue(id, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := x509svid.Verify(svid.Certificates, c.Bundle())
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if got != id {
		t.Fatalf("verified ID = %s, want %s", got, id)
	}
	// The marshalled pair must parse back, so the key matches the leaf.
	certPEM, keyPEM, err := svid.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x509svid.Parse(certPEM, keyPEM); err != nil {
		t.Fatalf("parse marshalled SVID: %v", err)
	}
	second, err := c.Issue(id, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if second.Certificates[0].SerialNumber.Cmp(svid.Certificates[0].SerialNumber) == 0 {
		t.Fatal("two SVIDs share a serial number")
	}
}

// TestAnSVIDLivesAtLeastItsTTL: X.509 keeps whole seconds, and an SVID
// whose NotAfter was rounded down lived up to a second less than its
// ttl; with dev's 2 s SVIDs rotated at half-life that left a folder
// about 100 ms to swap before the old set expired, which a loaded CI
// machine missed. Every SVID now lives its ttl or more from its issue.
func TestAnSVIDLivesAtLeastItsTTL(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	c, err := NewCA(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	const ttl = 2 * time.Second
	for range 20 {
		issued := time.Now()
		svid, err := c.Issue(spiffeid.RequireFromPath(td, "/dev"), ttl)
		if err != nil {
			t.Fatal(err)
		}
		if leaf := svid.Certificates[0]; leaf.NotAfter.Before(issued.Add(ttl)) {
			t.Fatalf("issued at %s with ttl %s, NotAfter %s: lives %s", issued.Format(time.RFC3339Nano), ttl, leaf.NotAfter, leaf.NotAfter.Sub(issued))
		}
		time.Sleep(37 * time.Millisecond) // land at other fractions of a second
	}
}
