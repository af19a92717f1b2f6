package filesink

import (
	"crypto/x509"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/goleak"

	"github.com/sds-bridge/sds-bridge/internal/devapi"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
	"github.com/sds-bridge/sds-bridge/reload"
	"github.com/sds-bridge/sds-bridge/rotation"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testCA is a CA with its trust domain, for short test code.
type testCA struct {
	*devapi.CA
	td spiffeid.TrustDomain
}

func newCA(t testing.TB, td string) testCA {
	t.Helper()
	d := spiffeid.RequireTrustDomainFromString(td)
	c, err := devapi.NewCA(d, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return testCA{CA: c, td: d}
}

func (c testCA) id(path string) spiffeid.ID { return spiffeid.RequireFromPath(c.td, path) }

func (c testCA) issue(t testing.TB, opts devapi.SVIDOptions) *x509svid.SVID {
	t.Helper()
	s, err := c.IssueWith(c.id("/db"), time.Hour, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// update wraps svid into an Update carrying the given bundles, built as
// rotation builds it. Test data that breaks NewUpdate's rules is a bug in
// the test: it panics.
func update(gen uint64, svid *x509svid.SVID, bundles ...*x509bundle.Bundle) *rotation.Update {
	u, err := rotation.NewUpdate(gen, []*x509svid.SVID{svid}, bundles, time.Now())
	if err != nil {
		panic(err)
	}
	return u
}

// syncBuffer collects log output written from many goroutines.
type syncBuffer = testkit.LogBuffer

// newFolder creates a Folder in a fresh directory unless cfg says where;
// unless cfg has a logger, logs go to the returned buffer and to the test
// log on failure.
func newFolder(t testing.TB, cfg Config) (*Folder, *syncBuffer) {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(t.TempDir(), "creds")
	}
	logs := &syncBuffer{}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	f, err := New(cfg)
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

// written is a folder that the writer (Prepare, then Apply) made from cfg
// in a fresh directory: generation gen of svids, the first the default,
// with c's bundle. Its log goes to the test log on failure.
func written(t testing.TB, cfg Config, gen uint64, c testCA, svids ...*x509svid.SVID) *Folder {
	t.Helper()
	cfg.Dir = ""
	f, _ := newFolder(t, cfg)
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

func certPEM(certs ...*x509.Certificate) []byte { return encodeCerts(certs) }

func keyPEM(t testing.TB, s *x509svid.SVID) []byte {
	t.Helper()
	_, k, err := s.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// listDir returns the names in dir, sorted (os.ReadDir sorts).
func listDir(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// newRunner is a folder's reload runner for cfg.
func newRunner(t testing.TB, cfg reload.Config) *reload.Runner {
	t.Helper()
	r, err := reload.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
