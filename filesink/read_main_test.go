package filesink_test

import (
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/internal/devapi"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
	"github.com/sds-bridge/sds-bridge/rotation"
)

// td is every test CA's trust domain: two CAs are strangers all the same.
var td = spiffeid.RequireTrustDomainFromString("example.org")

func newCA(t testing.TB) *devapi.CA {
	t.Helper()
	c, err := devapi.NewCA(td, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// issue is an SVID of c for /db, valid for an hour unless opts say
// otherwise.
func issue(t testing.TB, c *devapi.CA, opts devapi.SVIDOptions) *x509svid.SVID {
	t.Helper()
	s, err := c.IssueWith(spiffeid.RequireFromPath(td, "/db"), time.Hour, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// written is a folder that the writer (filesink: Prepare, then Apply) made
// from cfg in a fresh directory: generation gen of svids, the first the
// default, with c's bundle. Its log goes to the test log on failure.
func written(t testing.TB, cfg filesink.Config, gen uint64, c *devapi.CA, svids ...*x509svid.SVID) *filesink.Folder {
	t.Helper()
	cfg.Dir = filepath.Join(t.TempDir(), "creds")
	logs := &testkit.LogBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("filesink logs:\n%s", logs.String())
		}
	})
	f, err := filesink.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	u, err := rotation.NewUpdate(gen, svids, []*x509bundle.Bundle{c.Bundle()}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Prepare(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := f.Apply(t.Context(), u); err != nil {
		t.Fatal(err)
	}
	return f
}

// writePlain writes files as another tool (spiffe-helper) would: regular
// files, no ..data.
func writePlain(t testing.TB, dir string, files map[string][]byte) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func certPEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

func keyPEM(t testing.TB, s *x509svid.SVID) []byte {
	t.Helper()
	_, k, err := s.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return k
}
