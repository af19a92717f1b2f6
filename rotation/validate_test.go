package rotation

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/sds-bridge/sds-bridge/internal/devapi"
)

func TestValidate(t *testing.T) {
	own, err := devapi.NewCA(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	fedTD := spiffeid.RequireTrustDomainFromString("partner.test")
	partner, err := devapi.NewCA(fedTD, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(c *devapi.CA, id spiffeid.ID) *x509svid.SVID {
		s, err := c.Issue(id, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	good := issue(own, svcID)
	second := issue(own, spiffeid.RequireFromPath(td, "/second"))
	bundles := x509bundle.NewSet(own.Bundle(), partner.Bundle())
	now := time.Now()

	for _, tc := range []struct {
		name    string
		xc      *workloadapi.X509Context
		at      time.Time
		wantErr string
	}{
		{"good with federation", &workloadapi.X509Context{SVIDs: []*x509svid.SVID{good, second}, Bundles: bundles}, now, ""},
		{"no SVIDs", &workloadapi.X509Context{Bundles: bundles}, now, "no SVID"},
		{"no bundles", &workloadapi.X509Context{SVIDs: []*x509svid.SVID{good}, Bundles: x509bundle.NewSet()}, now, "no trust bundle"},
		{"only a federated bundle", &workloadapi.X509Context{SVIDs: []*x509svid.SVID{good}, Bundles: x509bundle.NewSet(partner.Bundle())}, now, `no bundle for its trust domain "example.org"`},
		{"expired at validation time", &workloadapi.X509Context{SVIDs: []*x509svid.SVID{good}, Bundles: bundles}, now.Add(2 * time.Minute), "expired at"},
		{"one bad SVID refuses all", &workloadapi.X509Context{SVIDs: []*x509svid.SVID{good, issue(partner, svcID)}, Bundles: bundles}, now, "chain does not verify"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Validate(tc.xc, tc.at)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != 2 || got[0].TrustDomain() != td || got[1].TrustDomain() != fedTD {
					t.Errorf("bundles not sorted by trust domain: %v", got)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want ErrRefused containing %q", err, tc.wantErr)
			}
		})
	}
}

// Validate draws the validity window as certcheck and crypto/x509 do: a
// context whose leaf reaches NotAfter exactly is still accepted (it used to
// be refused here while filesink's readiness accepted it), one second later
// it is refused.
func TestValidateAcceptsALeafAtExactlyNotAfter(t *testing.T) {
	own, err := devapi.NewCA(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	svid, err := own.Issue(svcID, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	xc := &workloadapi.X509Context{SVIDs: []*x509svid.SVID{svid}, Bundles: x509bundle.NewSet(own.Bundle())}
	notAfter := svid.Certificates[0].NotAfter
	if _, err := Validate(xc, notAfter); err != nil {
		t.Errorf("at NotAfter: %v", err)
	}
	if _, err := Validate(xc, notAfter.Add(time.Second)); err == nil || !strings.Contains(err.Error(), "expired at") {
		t.Errorf("a second after NotAfter: %v, want expired", err)
	}
}

// A key that is not the leaf's never reaches Validate: go-spiffe's parser
// refuses the Workload API's response (x509svid.ParseRaw), which is why
// Validate does not compare them again. TestMalformedWorkloadAPIResponses
// sends such a response through the watch and sees it refused.
func TestTheParserRefusesAKeyOfAnotherSVID(t *testing.T) {
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		URIs:         []*url.URL{svcID.URL()},
	}
	cert, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &leafKey.PublicKey, leafKey)
	if err != nil {
		t.Fatal(err)
	}
	key, err := x509.MarshalPKCS8PrivateKey(otherKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x509svid.ParseRaw(cert, key); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("ParseRaw of a key of another SVID = %v, want an error containing %q", err, "does not match")
	}
}
