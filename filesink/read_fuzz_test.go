package filesink

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// FuzzInspect writes arbitrary bytes into the three files of a
// spiffe-helper folder and reads it as `wait` and `check` do. No input may
// panic or hang; a refusal is a one-line *MaterialError with a Reason; an
// accepted set is a real one: its key is the certificate's and the
// Material describes that certificate. The check time is the middle of
// the certificate's life, so committed seeds stay meaningful after they
// expire.
func FuzzInspect(f *testing.F) {
	f.Add([]byte(""), []byte(""), []byte(""))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n"), []byte("-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n"), []byte("x"))
	f.Fuzz(func(t *testing.T, cert, key, bundle []byte) {
		dir := t.TempDir()
		for name, data := range map[string][]byte{DefaultCertFileName: cert, DefaultKeyFileName: key, DefaultBundleFileName: bundle} {
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		now := time.Now()
		if b, _ := pem.Decode(cert); b != nil {
			if leaf, err := x509.ParseCertificate(b.Bytes); err == nil {
				now = leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
			}
		}
		m, err := Inspect(InspectConfig{Dir: dir, Now: now})
		if err != nil {
			var me *MaterialError
			if !errors.As(err, &me) || me.Reason == nil || strings.ContainsAny(err.Error(), "\n\r") {
				t.Fatalf("refusal %q (%T) is not a one-line MaterialError", err, err)
			}
			return
		}
		svid, err := x509svid.Parse(cert, key)
		if err != nil {
			t.Fatalf("Inspect accepted a set x509svid cannot parse: %v", err)
		}
		leaf := svid.Certificates[0]
		if m.SPIFFEID != svid.ID || m.Serial != leaf.SerialNumber.Text(16) || !m.NotAfter.Equal(leaf.NotAfter) {
			t.Errorf("Material %+v does not describe %s (serial %x)", m, svid.ID, leaf.SerialNumber)
		}
		if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
			t.Errorf("accepted outside the validity window")
		}
	})
}
