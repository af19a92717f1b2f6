package filesink

import (
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sds-bridge/sds-bridge/internal/testkit"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/goleak"

	"github.com/sds-bridge/sds-bridge/internal/ca"
	"github.com/sds-bridge/sds-bridge/rotation"
)

// helperArg makes the test binary act as a child process for the action
// tests (a process to signal, a command to exec).
const helperArg = "filesink-test-helper"

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == helperArg {
		os.Exit(runHelper(os.Args[2:]))
	}
	goleak.VerifyTestMain(m)
}

func runHelper(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "helper: no mode")
		return 2
	}
	switch args[0] {
	case "wait-sighup": // <ready file> <got file>
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGHUP)
		// Ready only once the handler is installed: before that, SIGHUP
		// would kill the process.
		if err := os.WriteFile(args[1], []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		select {
		case s := <-ch:
			if err := os.WriteFile(args[2], []byte(s.String()), 0o644); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 2
			}
			return 0
		case <-time.After(30 * time.Second):
			return 3
		}
	case "dump-env": // <out file>
		var b strings.Builder
		for _, k := range []string{"SDS_BRIDGE_EVENT", "SDS_BRIDGE_DIR", "SDS_BRIDGE_GENERATION", "SDS_BRIDGE_SPIFFE_ID", "SDS_BRIDGE_NOT_AFTER"} {
			fmt.Fprintf(&b, "%s=%s\n", k, os.Getenv(k))
		}
		if err := os.WriteFile(args[1], []byte(b.String()), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		return 0
	case "fail": // <exit code> <stderr line>...
		code, _ := strconv.Atoi(args[1])
		for _, l := range args[2:] {
			fmt.Fprintln(os.Stderr, l)
		}
		return code
	case "sleep":
		time.Sleep(60 * time.Second)
		return 0
	}
	fmt.Fprintln(os.Stderr, "helper: unknown mode", args[0])
	return 2
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
