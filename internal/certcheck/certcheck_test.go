package certcheck

import (
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sds-bridge/sds-bridge/internal/devapi"
)

var (
	td = spiffeid.RequireTrustDomainFromString("example.org")
	id = spiffeid.RequireFromPath(td, "/db")
)

// The validity window is inclusive at both ends, exactly as crypto/x509's
// own Verify draws it: the leaf is valid at NotBefore and at NotAfter, and
// not one nanosecond outside. Each instant is checked against crypto/x509
// too, so the test cannot agree with itself only.
func TestWindowIncludesBothEndsAsCryptoX509Does(t *testing.T) {
	c, err := devapi.NewCA(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(time.Second)
	svid, err := c.IssueWith(id, time.Hour, devapi.SVIDOptions{NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	leaf := svid.Certificates[0]
	roots := x509.NewCertPool()
	roots.AddCert(c.Bundle().X509Authorities()[0])

	for _, tc := range []struct {
		name string
		at   time.Time
		want error
	}{
		{"just before NotBefore", leaf.NotBefore.Add(-time.Nanosecond), ErrNotYetValid},
		{"at NotBefore", leaf.NotBefore, nil},
		{"inside", now, nil},
		{"at NotAfter", leaf.NotAfter, nil},
		{"just after NotAfter", leaf.NotAfter.Add(time.Nanosecond), ErrExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Window(leaf, tc.at)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("Window at %s = %v, want %v", tc.at, err, tc.want)
			}
			_, goErr := leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: tc.at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
			if (goErr == nil) != (err == nil) {
				t.Errorf("Window says %v but crypto/x509 Verify says %v", err, goErr)
			}
			if (err == nil) != (Chain(svid.Certificates, c.Bundle(), tc.at) == nil) {
				t.Errorf("Window and Chain disagree at %s", tc.at)
			}
		})
	}
}

// The window errors name the instant that was crossed, in UTC RFC 3339, so
// every caller's message reads the same.
func TestWindowErrorsNameTheCrossedInstant(t *testing.T) {
	c, err := devapi.NewCA(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	svid, err := c.Issue(id, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	leaf := svid.Certificates[0]
	if err := Window(leaf, leaf.NotAfter.Add(time.Second)); err == nil || err.Error() != "expired at "+leaf.NotAfter.UTC().Format(time.RFC3339) {
		t.Errorf("expired: %v", err)
	}
	if err := Window(leaf, leaf.NotBefore.Add(-time.Second)); err == nil || err.Error() != "not valid until "+leaf.NotBefore.UTC().Format(time.RFC3339) {
		t.Errorf("not yet valid: %v", err)
	}
}

// KeyMatches accepts the leaf's own key and refuses another SVID's key and
// a missing one.
func TestKeyMatchesOnlyTheLeafsOwnKey(t *testing.T) {
	c, err := devapi.NewCA(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.Issue(id, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Issue(id, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := KeyMatches(a.PrivateKey, a.Certificates[0]); err != nil {
		t.Errorf("own key: %v", err)
	}
	if err := KeyMatches(b.PrivateKey, a.Certificates[0]); !errors.Is(err, ErrKeyMismatch) {
		t.Errorf("another key: %v, want ErrKeyMismatch", err)
	}
	if err := KeyMatches(nil, a.Certificates[0]); err == nil || !strings.Contains(err.Error(), "no private key") {
		t.Errorf("nil key: %v", err)
	}
}
