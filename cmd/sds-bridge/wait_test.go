package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
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

var (
	exampleTD = spiffeid.RequireTrustDomainFromString("example.org")
	dbID      = spiffeid.RequireFromPath(exampleTD, "/db")
)

func newCA(t testing.TB) *devapi.CA {
	t.Helper()
	c, err := devapi.NewCA(exampleTD, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func issue(t testing.TB, c *devapi.CA, ttl time.Duration, opts devapi.SVIDOptions) *x509svid.SVID {
	t.Helper()
	s, err := c.IssueWith(dbID, ttl, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The folders `wait` and `check` meet at a pod's start, each with the
// one-line reason they must give.
func TestCheckAndWait(t *testing.T) {
	authority, other := newCA(t), newCA(t)
	roots := authority.Bundle().X509Authorities()
	fresh := issue(t, authority, time.Hour, devapi.SVIDOptions{})
	past := time.Now().Add(-time.Hour).Truncate(time.Second)
	expired := issue(t, authority, time.Hour, devapi.SVIDOptions{NotBefore: past.Add(-time.Hour), NotAfter: past})
	stranger := issue(t, other, time.Hour, devapi.SVIDOptions{})

	for _, tc := range []struct {
		name  string
		setup func(dir string)
		extra []string
		// want is in check's output (ok) or error (not ok).
		ok   bool
		want []string
	}{
		{name: "no folder", setup: func(string) {}, want: []string{"does not exist"}},
		{name: "empty folder", setup: func(dir string) {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}, want: []string{"missing file", "svid.pem"}},
		{name: "previous pod's expired set", setup: func(dir string) { writeSVID(t, dir, expired, roots) },
			want: []string{"expired at " + past.UTC().Format(time.RFC3339), dbID.String()}},
		{name: "mismatched key", setup: func(dir string) { writeSet(t, dir, fresh.Certificates, stranger.PrivateKey, roots) },
			want: []string{"private key does not match certificate"}},
		{name: "set from another CA", setup: func(dir string) { writeSVID(t, dir, stranger, roots) },
			want: []string{"chain does not verify against bundle"}},
		{name: "fresh set", setup: func(dir string) { writeSVID(t, dir, fresh, roots) }, ok: true,
			want: []string{dbID.String(), "serial " + fresh.Certificates[0].SerialNumber.Text(16)}},
		{name: "fresh set but too short", setup: func(dir string) { writeSVID(t, dir, fresh, roots) }, extra: []string{"--min-validity", "2h"},
			want: []string{"less than the required 2h0m0s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "certs")
			tc.setup(dir)

			var out bytes.Buffer
			err := run(t.Context(), append([]string{"check", "--dir", dir}, tc.extra...), &out, &out)
			text := out.String()
			if err != nil {
				text = err.Error()
			}
			if (err == nil) != tc.ok {
				t.Fatalf("check: err = %v, output %q; want ok=%v", err, out.String(), tc.ok)
			}
			if strings.Count(strings.TrimSpace(text), "\n") != 0 {
				t.Errorf("check said more than one line: %q", text)
			}
			for _, w := range tc.want {
				if !strings.Contains(text, w) {
					t.Errorf("check said %q, want it to mention %q", text, w)
				}
			}

			// wait gives the same verdict, after its timeout when negative.
			out.Reset()
			err = run(t.Context(), append([]string{"wait", "--dir", dir, "--timeout", "300ms"}, tc.extra...), &out, &out)
			if (err == nil) != tc.ok {
				t.Fatalf("wait: err = %v; want ok=%v", err, tc.ok)
			}
			if tc.ok {
				if !strings.HasPrefix(out.String(), "ready: ") {
					t.Errorf("wait printed %q, want ready: …", out.String())
				}
				return
			}
			if !strings.Contains(err.Error(), "not ready after 300ms") || !strings.Contains(err.Error(), tc.want[0]) {
				t.Errorf("wait error %q, want the timeout and %q", err, tc.want[0])
			}
		})
	}
}

// newFolderWriter is the bridge's file sink on dir, prepared as at start.
func newFolderWriter(t testing.TB, dir string) *filesink.Folder {
	t.Helper()
	f, err := filesink.New(filesink.Config{Dir: dir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	return f
}

func update(gen uint64, svid *x509svid.SVID, c *devapi.CA) *rotation.Update {
	u, err := rotation.NewUpdate(gen, []*x509svid.SVID{svid}, []*x509bundle.Bundle{c.Bundle()}, time.Now())
	if err != nil {
		panic(err)
	}
	return u
}

// wait, started on an empty folder, returns success once the bridge has
// written it (BenchmarkWaitNoticesWrite measures how soon).
func TestWaitReturnsOnceTheBridgeWrites(t *testing.T) {
	authority := newCA(t)
	dir := filepath.Join(t.TempDir(), "certs")
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- run(t.Context(), []string{"wait", "--dir", dir, "--timeout", "60s"}, &out, &out) }()

	select {
	case err := <-done:
		t.Fatalf("wait returned before anything was written: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	svid := issue(t, authority, time.Hour, devapi.SVIDOptions{})
	if err := newFolderWriter(t, dir).Apply(t.Context(), update(1, svid, authority)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("wait: %v", err)
		}
	case <-time.After(testkit.Timeout):
		t.Fatal("wait did not return after the bridge wrote the folder")
	}
	if want := "serial " + svid.Certificates[0].SerialNumber.Text(16); !strings.Contains(out.String(), want) || !strings.Contains(out.String(), "generation 1") {
		t.Errorf("wait printed %q, want %q and generation 1", out.String(), want)
	}
}

// BenchmarkWaitNoticesWrite reports how long `wait` takes to return after
// the bridge's write has landed (inotify tells it; without, it polls every
// 200 ms).
func BenchmarkWaitNoticesWrite(b *testing.B) {
	authority := newCA(b)
	svid := issue(b, authority, time.Hour, devapi.SVIDOptions{})
	var total time.Duration
	for i := 0; b.Loop(); i++ {
		dir := filepath.Join(b.TempDir(), "certs")
		returned := make(chan time.Time, 1)
		go func() {
			_ = run(context.Background(), []string{"wait", "--dir", dir, "--timeout", "60s"}, &bytes.Buffer{}, &bytes.Buffer{})
			returned <- time.Now()
		}()
		// Land the write at a different point of the poll cycle each time.
		time.Sleep(time.Duration(i%10) * 20 * time.Millisecond)
		if err := newFolderWriter(b, dir).Apply(context.Background(), update(1, svid, authority)); err != nil {
			b.Fatal(err)
		}
		written := time.Now()
		total += (<-returned).Sub(written)
	}
	b.ReportMetric(float64(total)/float64(time.Millisecond)/float64(b.N), "ms-after-write/op")
}

// A folder written with custom names, as three of spiffe-helper's four
// examples configure (server.crt, server.key, root.crt), is gated by
// `check --dir` alone (the folder says its names) and by `check --config`
// (the config says them); before, check looked for svid.pem.
func TestCheckAFolderWithCustomNames(t *testing.T) {
	authority := newCA(t)
	base := t.TempDir()
	dir := filepath.Join(base, "certs")
	other := filepath.Join(base, "other")
	f, err := filesink.New(filesink.Config{Dir: dir, CertFileName: "server.crt", KeyFileName: "server.key", BundleFileName: "root.crt",
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Prepare(t.Context()); err != nil {
		t.Fatal(err)
	}
	svid := issue(t, authority, time.Hour, devapi.SVIDOptions{})
	if err := f.Apply(t.Context(), update(1, svid, authority)); err != nil {
		t.Fatal(err)
	}
	if err := newFolderWriter(t, other).Apply(t.Context(), update(1, svid, authority)); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(base, "bridge.yaml")
	writeConfig(t, cfgFile, `
sds: {enabled: false}
files:
  - dir: `+dir+`
    cert_file_name: server.crt
    key_file_name: server.key
    bundle_file_name: root.crt
  - dir: `+other+`
`)
	serial := "serial " + svid.Certificates[0].SerialNumber.Text(16)
	for _, args := range [][]string{
		{"check", "--dir", dir},
		{"check", "--config", cfgFile, "--dir", dir},
		{"check", "--config", cfgFile},
		{"wait", "--config", cfgFile, "--timeout", "5s"},
	} {
		var out bytes.Buffer
		if err := run(t.Context(), args, &out, &out); err != nil {
			t.Errorf("%s: %v", strings.Join(args, " "), err)
			continue
		}
		if !strings.Contains(out.String(), serial) {
			t.Errorf("%s printed %q, want %q", strings.Join(args, " "), out.String(), serial)
		}
	}
	// Both folders of the config were tested, each named.
	var out bytes.Buffer
	if err := run(t.Context(), []string{"check", "--config", cfgFile}, &out, &out); err != nil ||
		!strings.Contains(out.String(), dir+": ") || !strings.Contains(out.String(), other+": ") {
		t.Errorf("check --config = %v, printed %q; want a line per folder", err, out.String())
	}
	// Guard: the names matter, so the passes above are not vacuous.
	if err := run(t.Context(), []string{"check", "--dir", dir, "--layout", "spiffe"}, &out, &out); err == nil {
		t.Error("check --layout spiffe of a spiffe-helper folder passed")
	}
	// --dir must be one of the config's folders.
	err = run(t.Context(), []string{"check", "--config", cfgFile, "--dir", base}, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "not a folder of config") {
		t.Errorf("check --dir outside the config = %v, want it refused", err)
	}
}

// A folder holding another SVID than its config chooses (the config
// changed, or two workloads share a path) fails check and wait with a
// reason naming both.
func TestCheckRefusesAFolderOfAnotherSVID(t *testing.T) {
	authority := newCA(t)
	base := t.TempDir()
	dir := filepath.Join(base, "certs")
	svid := issue(t, authority, time.Hour, devapi.SVIDOptions{})
	if err := newFolderWriter(t, dir).Apply(t.Context(), update(1, svid, authority)); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(base, "bridge.yaml")
	writeConfig(t, cfgFile, `
sds: {enabled: false}
files:
  - dir: `+dir+`
    svid: spiffe://example.org/web
`)
	var out bytes.Buffer
	err := run(t.Context(), []string{"check", "--config", cfgFile}, &out, &out)
	want := []string{dir, "holds " + dbID.String(), `configured for svid "spiffe://example.org/web"`}
	if err == nil {
		t.Fatalf("check --config passed: %q", out.String())
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("check --config = %q, want it to say %q", err, w)
		}
	}
	err = run(t.Context(), []string{"wait", "--config", cfgFile, "--timeout", "300ms"}, &out, &out)
	if err == nil || !strings.Contains(err.Error(), want[1]) {
		t.Errorf("wait --config = %v, want it to say %q", err, want[1])
	}
	// Guard: the set itself is valid; only the identity is wrong.
	if err := run(t.Context(), []string{"check", "--dir", dir}, &out, &out); err != nil {
		t.Errorf("check --dir: %v", err)
	}
}

func writeConfig(t testing.TB, path, yaml string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
}
