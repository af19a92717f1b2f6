package folderstate_test

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
	"go.uber.org/goleak"

	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/internal/ca"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
	"github.com/sds-bridge/sds-bridge/rotation"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testCA is a CA with its trust domain, for short test code.
type testCA struct {
	*ca.CA
	td spiffeid.TrustDomain
}

func newCA(t testing.TB, td string) testCA {
	t.Helper()
	d := spiffeid.RequireTrustDomainFromString(td)
	c, err := ca.New(d, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return testCA{CA: c, td: d}
}

func (c testCA) id(path string) spiffeid.ID { return spiffeid.RequireFromPath(c.td, path) }

func (c testCA) issue(t testing.TB, opts ca.SVIDOptions) *x509svid.SVID {
	t.Helper()
	s, err := c.IssueWith(c.id("/db"), time.Hour, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// update wraps svid into an Update carrying the given bundles.
func update(gen uint64, svid *x509svid.SVID, bundles ...*x509bundle.Bundle) *rotation.Update {
	u, err := rotation.NewUpdate(gen, []*x509svid.SVID{svid}, bundles, time.Now())
	if err != nil {
		panic(err)
	}
	return u
}

// newFolder is a filesink.Folder (the writer whose folders are read here)
// in a fresh directory unless cfg says where, logging to the test log on
// failure.
func newFolder(t testing.TB, cfg filesink.Config) (*filesink.Folder, *testkit.LogBuffer) {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(t.TempDir(), "creds")
	}
	logs := &testkit.LogBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	f, err := filesink.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("filesink logs:\n%s", logs.String())
		}
	})
	return f, logs
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
