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
