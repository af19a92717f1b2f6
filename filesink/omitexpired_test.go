package filesink

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"

	"github.com/sds-bridge/sds-bridge/internal/devapi"
)

// TestOmitExpiredLeavesAnExpiredCAOutOfTheBundleFile: a trust bundle that
// still holds a CA past its NotAfter (SPIRE keeps an old root until it
// prunes it) is written without it when omit_expired is set, as
// spiffe-helper writes it, and whole without it; the SVID is written
// either way.
func TestOmitExpiredLeavesAnExpiredCAOutOfTheBundleFile(t *testing.T) {
	old := newCA(t, "example.org")
	td := old.td
	current, err := devapi.NewCA(td, 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// 30 h on, the old root (24 h) has expired; the current one (48 h) has not.
	later := start.Add(30 * time.Hour)
	svid, err := current.IssueWith(old.id("/db"), time.Hour, devapi.SVIDOptions{NotBefore: later.Add(-time.Hour), NotAfter: later.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	both := x509bundle.FromX509Authorities(td, append(old.Bundle().X509Authorities(), current.Root()))
	for _, omit := range []bool{false, true} {
		f, _ := newFolder(t, Config{OmitExpired: omit, Now: func() time.Time { return later }})
		if err := f.Apply(t.Context(), update(1, svid, both)); err != nil {
			t.Fatalf("omit_expired %v: %v", omit, err)
		}
		got, err := parseCertsFile(filepath.Join(f.Dir(), "svid_bundle.pem"))
		if err != nil {
			t.Fatal(err)
		}
		want := both.X509Authorities()
		if omit {
			want = want[1:]
		}
		if len(got) != len(want) {
			t.Fatalf("omit_expired %v: bundle file holds %d CAs, want %d", omit, len(got), len(want))
		}
		for i := range want {
			if !got[i].Equal(want[i]) {
				t.Errorf("omit_expired %v: CA %d is %s, want %s", omit, i, got[i].NotAfter, want[i].NotAfter)
			}
		}
		if _, err := parseCertsFile(filepath.Join(f.Dir(), "svid.pem")); err != nil {
			t.Errorf("omit_expired %v: svid.pem: %v", omit, err)
		}
	}
}

// parseCertsFile reads every certificate of a PEM file, in order.
func parseCertsFile(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var certs []*x509.Certificate
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s: no certificate", path)
	}
	return certs, nil
}
