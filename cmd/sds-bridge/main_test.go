package main

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"

	"github.com/sds-bridge/sds-bridge/internal/testkit"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if targets := os.Getenv(floodRoleEnv); targets != "" {
		// A child process: the attacker of
		// TestAFloodOfRefusedAndAdminConnectionsDoesNotStarveRotation.
		os.Exit(runFloodRole(targets))
	}
	goleak.VerifyTestMain(m)
}

// syncBuffer collects log output written from many goroutines.
type syncBuffer = testkit.LogBuffer

// writeSet writes a spiffe-helper layout as plain files, the way another
// tool (or a previous pod) left them: leaf and chain, PKCS#8 key, roots.
func writeSet(t testing.TB, dir string, certs []*x509.Certificate, key any, roots []*x509.Certificate) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"svid.pem":        certsPEM(certs),
		"svid_key.pem":    pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		"svid_bundle.pem": certsPEM(roots),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func writeSVID(t testing.TB, dir string, svid *x509svid.SVID, roots []*x509.Certificate) {
	t.Helper()
	writeSet(t, dir, svid.Certificates, svid.PrivateKey, roots)
}

func certsPEM(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}
