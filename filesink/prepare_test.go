package filesink

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sds-bridge/sds-bridge/internal/devapi"
)

// TestPrepareRemovesStaleLeftovers puts files at the managed names the way
// spiffe-helper (or a previous pod) left them and checks what Prepare keeps.
func TestPrepareRemovesStaleLeftovers(t *testing.T) {
	current, previous := newCA(t, "example.org"), newCA(t, "example.org")
	now := time.Now()
	valid := current.issue(t, devapi.SVIDOptions{})
	other := current.issue(t, devapi.SVIDOptions{})
	expiredOld := previous.issue(t, devapi.SVIDOptions{NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-24 * time.Hour)})
	future := current.issue(t, devapi.SVIDOptions{NotBefore: now.Add(time.Hour), NotAfter: now.Add(2 * time.Hour)})
	fromPrevious := previous.issue(t, devapi.SVIDOptions{})
	currentBundle := certPEM(current.Root())

	tests := []struct {
		name      string
		files     map[string][]byte
		wantKept  []string
		wantLog   []string // fragments of the removal lines
		wantError error    // Inspect's verdict afterwards; nil = ready
	}{
		{
			name: "expired certificate of a previous pod from another CA (the seed's incident)",
			files: map[string][]byte{
				"svid.pem": certPEM(expiredOld.Certificates...), "svid_key.pem": keyPEM(t, expiredOld),
				"svid_bundle.pem": currentBundle, MarkerFileName: []byte(`{"generation":9}`),
			},
			wantKept:  []string{"svid_bundle.pem"},
			wantLog:   []string{"svid.pem", "svid_key.pem", "reason=expired", "expired at", MarkerFileName},
			wantError: ErrMissing,
		},
		{
			name: "not yet valid",
			files: map[string][]byte{
				"svid.pem": certPEM(future.Certificates...), "svid_key.pem": keyPEM(t, future), "svid_bundle.pem": currentBundle,
			},
			wantKept:  []string{"svid_bundle.pem"},
			wantLog:   []string{"reason=not-yet-valid", "not valid until"},
			wantError: ErrMissing,
		},
		{
			name: "key of another certificate",
			files: map[string][]byte{
				"svid.pem": certPEM(valid.Certificates...), "svid_key.pem": keyPEM(t, other), "svid_bundle.pem": currentBundle,
			},
			wantKept:  []string{"svid_bundle.pem"},
			wantLog:   []string{"reason=key-mismatch", "does not match"},
			wantError: ErrMissing,
		},
		{
			name: "chain does not verify against the folder's bundle",
			files: map[string][]byte{
				"svid.pem": certPEM(fromPrevious.Certificates...), "svid_key.pem": keyPEM(t, fromPrevious), "svid_bundle.pem": currentBundle,
			},
			wantKept:  []string{"svid_bundle.pem"},
			wantLog:   []string{"reason=untrusted", "does not verify", "unknown authority"},
			wantError: ErrMissing,
		},
		{
			name: "no bundle to verify against",
			files: map[string][]byte{
				"svid.pem": certPEM(valid.Certificates...), "svid_key.pem": keyPEM(t, valid),
			},
			wantKept:  nil,
			wantLog:   []string{"reason=untrusted", "no usable bundle"},
			wantError: ErrMissing,
		},
		{
			name: "truncated certificate",
			files: map[string][]byte{
				"svid.pem": certPEM(valid.Certificates...)[:200], "svid_key.pem": keyPEM(t, valid), "svid_bundle.pem": currentBundle,
			},
			wantKept:  []string{"svid_bundle.pem"},
			wantLog:   []string{"reason=malformed", "truncated"},
			wantError: ErrMissing,
		},
		{
			name: "valid leftovers stay",
			files: map[string][]byte{
				"svid.pem": certPEM(valid.Certificates...), "svid_key.pem": keyPEM(t, valid), "svid_bundle.pem": currentBundle,
				"postgresql.conf": []byte("not ours"),
			},
			wantKept: []string{"postgresql.conf", "svid.pem", "svid_bundle.pem", "svid_key.pem"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, logs := newFolder(t, Config{})
			writePlain(t, f.Dir(), tt.files)
			if err := f.Prepare(t.Context()); err != nil {
				t.Fatal(err)
			}
			if got := listDir(t, f.Dir()); !slices.Equal(got, tt.wantKept) {
				t.Errorf("after Prepare the folder holds %v, want %v", got, tt.wantKept)
			}
			out := logs.String()
			for _, frag := range tt.wantLog {
				if !strings.Contains(out, frag) {
					t.Errorf("logs lack %q:\n%s", frag, out)
				}
			}
			// One line per removed file.
			removed := len(tt.files) - len(tt.wantKept)
			if got := strings.Count(out, "removed stale file"); got != removed {
				t.Errorf("%d removal lines, want %d:\n%s", got, removed, out)
			}
			_, err := Inspect(InspectConfig{Dir: f.Dir()})
			if tt.wantError == nil && err != nil || tt.wantError != nil && !errors.Is(err, tt.wantError) {
				t.Errorf("Inspect after Prepare = %v, want %v", err, tt.wantError)
			}
		})
	}
}

// TestPrepareOwnGenerations covers a folder this package wrote before a
// restart: old generation directories, a temporary link of an interrupted
// swap and a ..data generation that has expired since.
func TestPrepareOwnGenerations(t *testing.T) {
	c := newCA(t, "example.org")

	t.Run("valid generation kept, the rest cleaned", func(t *testing.T) {
		f, _ := newFolder(t, Config{})
		dir := f.Dir()
		for gen := uint64(1); gen <= 3; gen++ {
			if err := f.Apply(t.Context(), update(gen, c.issue(t, devapi.SVIDOptions{}), c.Bundle())); err != nil {
				t.Fatal(err)
			}
		}
		current, _ := os.Readlink(filepath.Join(dir, DataLink))
		// What a crash can leave: a generation never swapped in, and the
		// temporary links of a swap.
		if err := os.Mkdir(filepath.Join(dir, "..2001_01_01_00_00_00.000000000-g99"), 0o755); err != nil {
			t.Fatal(err)
		}
		for _, tmp := range []string{dataTmpLink, linkTmpPrefix + "svid.pem"} {
			if err := os.Symlink("..2001_01_01_00_00_00.000000000-g99", filepath.Join(dir, tmp)); err != nil {
				t.Fatal(err)
			}
		}

		restarted, logs := newFolder(t, Config{Dir: dir})
		if err := restarted.Prepare(t.Context()); err != nil {
			t.Fatal(err)
		}
		want := []string{current, DataLink, MarkerFileName, "svid.pem", "svid_bundle.pem", "svid_key.pem"}
		if got := listDir(t, dir); !slices.Equal(got, want) {
			t.Errorf("folder = %v, want %v", got, want)
		}
		if !strings.Contains(logs.String(), "kept valid material") {
			t.Errorf("Prepare did not report the kept material:\n%s", logs)
		}
		m, err := Inspect(InspectConfig{Dir: dir})
		if err != nil || m.Generation != 3 {
			t.Errorf("Inspect = %+v, %v; want generation 3", m, err)
		}
	})

	t.Run("expired generation removed as a whole", func(t *testing.T) {
		f, _ := newFolder(t, Config{})
		dir := f.Dir()
		if err := f.Apply(t.Context(), update(1, c.issue(t, devapi.SVIDOptions{}), c.Bundle())); err != nil {
			t.Fatal(err)
		}
		// The bridge restarts two hours later: the hour-long SVID expired.
		later := time.Now().Add(2 * time.Hour)
		restarted, logs := newFolder(t, Config{Dir: dir, Now: func() time.Time { return later }})
		if err := restarted.Prepare(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got := listDir(t, dir); len(got) != 0 {
			t.Errorf("folder = %v, want empty", got)
		}
		out := logs.String()
		for _, name := range []string{"svid.pem", "svid_key.pem", "svid_bundle.pem", MarkerFileName, DataLink} {
			if !strings.Contains(out, filepath.Join(dir, name)+" reason=expired") {
				t.Errorf("no removal line for %s:\n%s", name, out)
			}
		}
		if _, err := Inspect(InspectConfig{Dir: dir, Now: later}); !errors.Is(err, ErrMissing) {
			t.Errorf("Inspect = %v, want missing", err)
		}
		// And the folder works again.
		if err := restarted.Apply(t.Context(), update(1, c.issue(t, devapi.SVIDOptions{NotBefore: later.Add(-time.Minute), NotAfter: later.Add(time.Hour)}), c.Bundle())); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("broken ..data link", func(t *testing.T) {
		f, _ := newFolder(t, Config{})
		dir := f.Dir()
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, target := range map[string]string{DataLink: "..gone", "svid.pem": "..data/svid.pem"} {
			if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.Prepare(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got := listDir(t, dir); len(got) != 0 {
			t.Errorf("folder = %v, want empty", got)
		}
	})

	t.Run("spiffe layout: expired credential goes, bundles stay", func(t *testing.T) {
		f, logs := newFolder(t, Config{Layout: LayoutSPIFFE})
		old := c.issue(t, devapi.SVIDOptions{NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
		cred := append(keyPEM(t, old), certPEM(old.Certificates...)...)
		writePlain(t, f.Dir(), map[string][]byte{
			CredentialFileName:                       cred,
			"example.org" + TrustBundleSuffix:        certPEM(c.Root()),
			"partner.net" + TrustBundleSuffix:        []byte("-----BEGIN CERTIFICATE-----\nnot base64"),
			"not a trust domain" + TrustBundleSuffix: []byte("left alone"),
		})
		if err := f.Prepare(t.Context()); err != nil {
			t.Fatal(err)
		}
		want := []string{"example.org" + TrustBundleSuffix, "not a trust domain" + TrustBundleSuffix}
		if got := listDir(t, f.Dir()); !slices.Equal(got, want) {
			t.Errorf("folder = %v, want %v\n%s", got, want, logs)
		}
	})
}

// A valid generation behind ..data is checked once, and the stable names
// are not checked again only when each is our link into it: a stale file
// another tool left at a stable name beside a valid generation (an expired
// certificate, a malformed trust bundle) is still judged and removed, and
// the generation stays.
func TestPrepareJudgesPlainFilesBesideAValidGeneration(t *testing.T) {
	c := newCA(t, "example.org")
	old := c.issue(t, devapi.SVIDOptions{NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	for _, tc := range []struct {
		cfg   Config
		plain map[string][]byte
		want  []string // besides the generation and ..data
	}{
		{cfg: Config{Layout: LayoutSPIFFEHelper}, plain: map[string][]byte{"svid.pem": certPEM(old.Certificates...)}, want: []string{"svid_bundle.pem"}},
		{cfg: Config{Layout: LayoutSPIFFE}, plain: map[string][]byte{"partner.net" + TrustBundleSuffix: []byte("-----BEGIN CERTIFICATE-----\nnot base64")},
			want: []string{CredentialFileName, "example.org" + TrustBundleSuffix, MarkerFileName}},
	} {
		t.Run(string(tc.cfg.Layout), func(t *testing.T) {
			f, _ := newFolder(t, tc.cfg)
			if err := f.Apply(t.Context(), update(1, c.issue(t, devapi.SVIDOptions{}), c.Bundle())); err != nil {
				t.Fatal(err)
			}
			for name := range tc.plain {
				if err := os.Remove(filepath.Join(f.Dir(), name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
					t.Fatal(err)
				}
			}
			writePlain(t, f.Dir(), tc.plain)
			current, _ := os.Readlink(filepath.Join(f.Dir(), DataLink))
			cfg := tc.cfg
			cfg.Dir = f.Dir()
			restarted, logs := newFolder(t, cfg)
			if err := restarted.Prepare(t.Context()); err != nil {
				t.Fatal(err)
			}
			want := append([]string{current, DataLink}, tc.want...)
			if got := listDir(t, f.Dir()); !slices.Equal(got, want) {
				t.Errorf("folder = %v, want %v\n%s", got, want, logs)
			}
			if tc.cfg.Layout == LayoutSPIFFEHelper && strings.Contains(logs.String(), "kept valid material") {
				t.Errorf("Prepare reported material kept with its certificate removed:\n%s", logs)
			}
		})
	}
}
