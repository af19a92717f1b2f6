package filesink

import (
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/sds-bridge/sds-bridge/internal/devapi"
	"github.com/sds-bridge/sds-bridge/rotation"
)

func TestNewValidates(t *testing.T) {
	abs := t.TempDir()
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"relative dir", Config{Dir: "creds"}, "absolute"},
		{"empty dir", Config{}, "absolute"},
		{"unknown layout", Config{Dir: abs, Layout: "k8s"}, `layout: "k8s"`},
		{"world-readable key", Config{Dir: abs, KeyMode: 0o644}, `key_mode: "0644"`},
		{"world-writable key", Config{Dir: abs, KeyMode: 0o602}, `key_mode: "0602"`},
		{"owner cannot read key", Config{Dir: abs, KeyMode: 0o040}, `key_mode: "0040"`},
		{"setuid cert", Config{Dir: abs, CertMode: os.ModeSetuid | 0o644}, "cert_mode"},
		{"path as file name", Config{Dir: abs, CertFileName: "a/b.pem"}, "cert_file_name"},
		{"reserved file name", Config{Dir: abs, KeyFileName: "..data"}, "key_file_name"},
		{"duplicate file name", Config{Dir: abs, CertFileName: "x.pem", BundleFileName: "x.pem"}, "already used"},
		{"marker as file name", Config{Dir: abs, BundleFileName: MarkerFileName}, "already used"},
		{"names in spiffe layout", Config{Dir: abs, Layout: LayoutSPIFFE, CertFileName: "c.pem"}, "fixed by the standard"},
		{"negative owner", Config{Dir: abs, Owner: &Owner{UID: -1}}, "owner"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New() error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}

	f, err := New(Config{Dir: abs + "/x/../creds"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := f.Name(), "files:"+abs+"/creds"; got != want {
		t.Errorf("Name() = %q, want %q", got, want)
	}
	if f.cfg.Layout != LayoutSPIFFEHelper || f.cfg.CertMode != 0o644 || f.cfg.KeyMode != 0o600 ||
		f.cfg.CertFileName != "svid.pem" || f.cfg.KeyFileName != "svid_key.pem" || f.cfg.BundleFileName != "svid_bundle.pem" {
		t.Errorf("defaults not applied: %+v", f.cfg)
	}
}

func modeOf(t *testing.T, path string) os.FileMode {
	t.Helper()
	st, err := os.Stat(path) // follows the stable symlink, as PostgreSQL does
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

func readMarkerFile(t *testing.T, dir string) marker {
	t.Helper()
	var m marker
	if err := json.Unmarshal(readFile(t, filepath.Join(dir, MarkerFileName)), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestApplySPIFFEHelperLayout(t *testing.T) {
	tests := []struct {
		name                  string
		cfg                   Config
		cert, key, bundle     string
		certMode, keyMode     os.FileMode
		includeRootInSVIDList bool
	}{
		{name: "defaults", cert: "svid.pem", key: "svid_key.pem", bundle: "svid_bundle.pem", certMode: 0o644, keyMode: 0o600},
		{
			name: "custom names and modes (root-owned key for PostgreSQL)",
			cfg:  Config{CertFileName: "server.crt", KeyFileName: "server.key", BundleFileName: "root.crt", CertMode: 0o444, KeyMode: 0o640},
			cert: "server.crt", key: "server.key", bundle: "root.crt", certMode: 0o444, keyMode: 0o640,
		},
		{name: "root in the SVID chain is left out", cert: "svid.pem", key: "svid_key.pem", bundle: "svid_bundle.pem", certMode: 0o644, keyMode: 0o600, includeRootInSVIDList: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCA(t, "example.org")
			now := time.Now().Truncate(time.Second)
			tt.cfg.Now = func() time.Time { return now }
			f, _ := newFolder(t, tt.cfg)
			svid := c.issue(t, devapi.SVIDOptions{})
			if tt.includeRootInSVIDList {
				svid = &x509svid.SVID{ID: svid.ID, Certificates: append(svid.Certificates, c.Root()), PrivateKey: svid.PrivateKey}
			}
			if err := f.Apply(t.Context(), update(7, svid, c.Bundle(), newCA(t, "other.org").Bundle())); err != nil {
				t.Fatal(err)
			}
			dir := f.Dir()

			for _, name := range []string{tt.cert, tt.key, tt.bundle, MarkerFileName} {
				target, err := os.Readlink(filepath.Join(dir, name))
				if err != nil || target != "..data/"+name {
					t.Errorf("%s: link target %q, %v; want ..data/%s", name, target, err, name)
				}
			}
			got, err := x509svid.Parse(readFile(t, filepath.Join(dir, tt.cert)), readFile(t, filepath.Join(dir, tt.key)))
			if err != nil {
				t.Fatalf("parse written SVID: %v", err)
			}
			if got.ID != svid.ID || len(got.Certificates) != 1 || !got.Certificates[0].Equal(svid.Certificates[0]) {
				t.Errorf("written chain = %s with %d certs, want %s with only the leaf", got.ID, len(got.Certificates), svid.ID)
			}
			bundle, err := x509bundle.Load(c.td, filepath.Join(dir, tt.bundle))
			if err != nil {
				t.Fatal(err)
			}
			if !bundle.Equal(c.Bundle()) {
				t.Errorf("bundle file holds %d authorities, want exactly the own CA root", len(bundle.X509Authorities()))
			}
			for name, want := range map[string]os.FileMode{tt.cert: tt.certMode, tt.key: tt.keyMode, tt.bundle: tt.certMode, MarkerFileName: tt.certMode} {
				if got := modeOf(t, filepath.Join(dir, name)); got != want {
					t.Errorf("%s mode = %#o, want %#o", name, got, want)
				}
			}
			target, err := os.Readlink(filepath.Join(dir, DataLink))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(target, "..") || !strings.HasSuffix(target, "-g7") {
				t.Errorf("..data -> %q, want a ..<timestamp>-g7 generation directory", target)
			}
			if got := modeOf(t, filepath.Join(dir, target)); got != 0o755 {
				t.Errorf("generation directory mode = %#o, want 0755", got)
			}
			m := readMarkerFile(t, dir)
			want := marker{
				Generation: 7,
				SPIFFEID:   "spiffe://example.org/db",
				Serial:     svid.Certificates[0].SerialNumber.Text(16),
				NotAfter:   svid.Certificates[0].NotAfter.UTC(),
				WrittenAt:  now.UTC(),
				// The folder describes itself: layout and the names written.
				Layout:         LayoutSPIFFEHelper,
				CertFileName:   tt.cert,
				KeyFileName:    tt.key,
				BundleFileName: tt.bundle,
			}
			if m != want {
				t.Errorf("marker = %+v, want %+v", m, want)
			}
			raw := string(readFile(t, filepath.Join(dir, MarkerFileName)))
			for _, key := range []string{`"generation":7`, `"spiffe_id":"spiffe://example.org/db"`, `"serial":"`, `"not_after":"`, `"written_at":"`} {
				if !strings.Contains(raw, key) {
					t.Errorf("marker %s lacks %s", raw, key)
				}
			}
		})
	}
}

// pemTypes lists the PEM block types of a file in order.
func pemTypes(t *testing.T, data []byte) []string {
	t.Helper()
	var types []string
	for {
		b, rest := pem.Decode(data)
		if b == nil {
			break
		}
		types = append(types, b.Type)
		data = rest
	}
	return types
}

func TestApplySPIFFELayout(t *testing.T) {
	own, fed := newCA(t, "example.org"), newCA(t, "partner.net")
	f, _ := newFolder(t, Config{Layout: LayoutSPIFFE})
	dir := f.Dir()
	svid := own.issue(t, devapi.SVIDOptions{})

	checkBundles := func(t *testing.T, want ...testCA) {
		t.Helper()
		var names []string
		for _, n := range listDir(t, dir) {
			if strings.HasSuffix(n, TrustBundleSuffix) {
				names = append(names, n)
			}
		}
		var wantNames []string
		for _, c := range want {
			wantNames = append(wantNames, c.td.Name()+TrustBundleSuffix)
		}
		if !slices.Equal(names, wantNames) {
			t.Fatalf("trust bundle files = %v, want %v", names, wantNames)
		}
		for _, c := range want {
			path := filepath.Join(dir, c.td.Name()+TrustBundleSuffix)
			b, err := x509bundle.Load(c.td, path)
			if err != nil {
				t.Fatal(err)
			}
			// One trust domain per file, never a concatenation.
			if !b.Equal(c.Bundle()) {
				t.Errorf("%s holds %d authorities, want only %s's root", path, len(b.X509Authorities()), c.td)
			}
			if got := modeOf(t, path); got != 0o644 {
				t.Errorf("%s mode = %#o, want 0644", path, got)
			}
		}
		// The generation directory holds exactly the same set.
		gen := listDir(t, filepath.Join(dir, DataLink))
		var genBundles []string
		for _, n := range gen {
			if strings.HasSuffix(n, TrustBundleSuffix) {
				genBundles = append(genBundles, n)
			}
		}
		if !slices.Equal(genBundles, wantNames) {
			t.Errorf("generation holds bundles %v, want %v", genBundles, wantNames)
		}
	}

	if err := f.Apply(t.Context(), update(1, svid, own.Bundle(), fed.Bundle())); err != nil {
		t.Fatal(err)
	}
	credPath := filepath.Join(dir, CredentialFileName)
	cred := readFile(t, credPath)
	if got, want := pemTypes(t, cred), []string{"PRIVATE KEY", "CERTIFICATE"}; !slices.Equal(got, want) {
		t.Errorf("%s blocks = %v, want %v (key, then chain without root)", CredentialFileName, got, want)
	}
	got, err := x509svid.Parse(cred, cred)
	if err != nil {
		t.Fatalf("parse credential bundle: %v", err)
	}
	if got.ID != svid.ID {
		t.Errorf("credential ID = %s, want %s", got.ID, svid.ID)
	}
	if m := modeOf(t, credPath); m != 0o600 {
		t.Errorf("%s mode = %#o, want 0600", CredentialFileName, m)
	}
	if m := readMarkerFile(t, dir); m.Generation != 1 || m.SPIFFEID != svid.ID.String() {
		t.Errorf("marker = %+v", m)
	}
	checkBundles(t, own, fed)

	// The federation ends: its bundle file goes away with the swap.
	if err := f.Apply(t.Context(), update(2, svid, own.Bundle())); err != nil {
		t.Fatal(err)
	}
	checkBundles(t, own)

	// And comes back.
	if err := f.Apply(t.Context(), update(3, svid, own.Bundle(), fed.Bundle())); err != nil {
		t.Fatal(err)
	}
	checkBundles(t, own, fed)
	m, err := Inspect(InspectConfig{Dir: dir, Names: Names{Layout: LayoutSPIFFE}})
	if err != nil {
		t.Fatal(err)
	}
	if m.Generation != 3 || len(m.TrustDomains) != 2 {
		t.Errorf("Inspect = %+v, want generation 3 with 2 trust domains", m)
	}
}

// tree snapshots a folder: every entry with its link target or content.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		switch {
		case info.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			out[rel] = "-> " + target
		case info.Mode().IsRegular():
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			out[rel] = string(data)
		default:
			out[rel] = info.Mode().String()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestApplyRefusesInvalidLeaf(t *testing.T) {
	c := newCA(t, "example.org")
	now := time.Now()
	tests := []struct {
		name    string
		opts    devapi.SVIDOptions
		wantErr string
	}{
		{"expired", devapi.SVIDOptions{NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Hour)}, "expired at"},
		{"not yet valid", devapi.SVIDOptions{NotBefore: now.Add(time.Hour), NotAfter: now.Add(2 * time.Hour)}, "not valid until"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, _ := newFolder(t, Config{})
			good := c.issue(t, devapi.SVIDOptions{})
			if err := f.Apply(t.Context(), update(1, good, c.Bundle())); err != nil {
				t.Fatal(err)
			}
			before := tree(t, f.Dir())
			err := f.Apply(t.Context(), update(2, c.issue(t, tt.opts), c.Bundle()))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "refusing") {
				t.Fatalf("Apply() error = %v, want a refusal containing %q", err, tt.wantErr)
			}
			after := tree(t, f.Dir())
			if len(before) != len(after) {
				t.Fatalf("folder changed: %d entries before, %d after", len(before), len(after))
			}
			for k, v := range before {
				if after[k] != v {
					t.Errorf("%s changed", k)
				}
			}
		})
	}

	// An Update without the own bundle cannot reach Apply at all: it is
	// refused where it is built (the filesink no longer checks again).
	t.Run("no own bundle", func(t *testing.T) {
		_, err := rotation.NewUpdate(1, []*x509svid.SVID{c.issue(t, devapi.SVIDOptions{})}, []*x509bundle.Bundle{newCA(t, "other.org").Bundle()}, time.Now())
		if err == nil || !strings.Contains(err.Error(), "no bundle for own trust domain") {
			t.Fatalf("NewUpdate() error = %v, want a missing-bundle error", err)
		}
	})
}

func TestApplyOwner(t *testing.T) {
	owners := []Owner{{UID: os.Getuid(), GID: os.Getgid()}}
	if os.Getuid() == 0 {
		// As root, the current ids cannot tell chown from no chown.
		owners = append(owners, Owner{UID: 4242, GID: 4343})
	}
	c := newCA(t, "example.org")
	for _, owner := range owners {
		t.Run("", func(t *testing.T) {
			f, _ := newFolder(t, Config{Owner: &owner})
			if err := f.Apply(t.Context(), update(1, c.issue(t, devapi.SVIDOptions{}), c.Bundle())); err != nil {
				t.Fatal(err)
			}
			target, err := os.Readlink(filepath.Join(f.Dir(), DataLink))
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{"svid.pem", "svid_key.pem", "svid_bundle.pem", MarkerFileName, target} {
				st, err := os.Stat(filepath.Join(f.Dir(), name))
				if err != nil {
					t.Fatal(err)
				}
				sys := st.Sys().(*syscall.Stat_t)
				if int(sys.Uid) != owner.UID || int(sys.Gid) != owner.GID {
					t.Errorf("%s owned by %d:%d, want %d:%d", name, sys.Uid, sys.Gid, owner.UID, owner.GID)
				}
			}
			if m := modeOf(t, filepath.Join(f.Dir(), "svid_key.pem")); m != 0o600 {
				t.Errorf("key mode after chown = %#o, want 0600", m)
			}
		})
	}
}

func TestApplyGenerations(t *testing.T) {
	c := newCA(t, "example.org")
	// A frozen clock makes every generation directory share its timestamp:
	// names must still be unique and say the generation.
	now := time.Now()
	f, _ := newFolder(t, Config{Now: func() time.Time { return now }})
	dir := f.Dir()
	// A valid file left by another tool at a stable name is replaced by
	// the link.
	writePlain(t, dir, map[string][]byte{"svid.pem": []byte("left by spiffe-helper")})

	var targets []string
	for gen := uint64(1); gen <= 4; gen++ {
		if err := f.Apply(t.Context(), update(gen, c.issue(t, devapi.SVIDOptions{}), c.Bundle())); err != nil {
			t.Fatal(err)
		}
		target, err := os.Readlink(filepath.Join(dir, DataLink))
		if err != nil {
			t.Fatal(err)
		}
		targets = append(targets, target)
		if m := readMarkerFile(t, dir); m.Generation != gen {
			t.Errorf("marker generation = %d, want %d", m.Generation, gen)
		}
	}
	// The same generation again (a retried write) gets its own directory.
	if err := f.Apply(t.Context(), update(4, c.issue(t, devapi.SVIDOptions{}), c.Bundle())); err != nil {
		t.Fatal(err)
	}
	last, _ := os.Readlink(filepath.Join(dir, DataLink))
	if last == targets[3] || !strings.HasPrefix(last, targets[3]) {
		t.Errorf("re-applied generation 4 went to %q, want a fresh name after %q", last, targets[3])
	}
	targets = append(targets, last)
	if !slices.IsSorted(targets[:4]) {
		t.Errorf("generation directories do not sort: %v", targets)
	}

	var gens []string
	for _, n := range listDir(t, dir) {
		if strings.HasPrefix(n, "..") && n != DataLink {
			gens = append(gens, n)
		}
	}
	// The current generation and the one before it; older ones are gone.
	if want := []string{targets[3], targets[4]}; !slices.Equal(gens, want) {
		t.Errorf("generation directories = %v, want %v", gens, want)
	}
	if target, err := os.Readlink(filepath.Join(dir, "svid.pem")); err != nil || target != "..data/svid.pem" {
		t.Errorf("svid.pem -> %q, %v; want the stable link", target, err)
	}
}
