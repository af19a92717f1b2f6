package filesink

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sds-bridge/sds-bridge/internal/devapi"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

func TestWorldWritableFolder(t *testing.T) {
	c := newCA(t, "example.org")
	t.Run("refused by default", func(t *testing.T) {
		f, _ := newFolder(t, Config{})
		if err := os.MkdirAll(f.Dir(), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(f.Dir(), 0o1777); err != nil { // even with the sticky bit
			t.Fatal(err)
		}
		err := f.Prepare(t.Context())
		if err == nil || !strings.Contains(err.Error(), "writable by every user (mode 0777)") || !strings.Contains(err.Error(), "allow_world_writable_dir") {
			t.Fatalf("Prepare = %v, want the world-writable folder refused", err)
		}
		if err := f.Apply(t.Context(), update(1, c.issue(t, devapi.SVIDOptions{}), c.Bundle())); err == nil || !strings.Contains(err.Error(), "writable by every user") {
			t.Fatalf("Apply = %v, want the world-writable folder refused", err)
		}
		if got := listDir(t, f.Dir()); len(got) != 0 {
			t.Errorf("files written into a refused folder: %v", got)
		}
	})
	t.Run("becoming world-writable stops the swaps, the set stays", func(t *testing.T) {
		f, _ := newFolder(t, Config{})
		if err := f.Prepare(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := f.Apply(t.Context(), update(1, c.issue(t, devapi.SVIDOptions{}), c.Bundle())); err != nil {
			t.Fatal(err)
		}
		before, err := Inspect(InspectConfig{Dir: f.Dir()})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(f.Dir(), 0o777); err != nil {
			t.Fatal(err)
		}
		if err := f.Apply(t.Context(), update(2, c.issue(t, devapi.SVIDOptions{}), c.Bundle())); err == nil {
			t.Fatal("Apply into a world-writable folder succeeded")
		}
		after, err := Inspect(InspectConfig{Dir: f.Dir()})
		if err != nil || after.Serial != before.Serial || after.Generation != 1 {
			t.Fatalf("set after a refused swap: %+v, %v; want generation 1 (serial %s)", after, err, before.Serial)
		}
	})
	t.Run("allowed when told", func(t *testing.T) {
		f, _ := newFolder(t, Config{AllowWorldWritableDir: true})
		if err := os.MkdirAll(f.Dir(), 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(f.Dir(), 0o777); err != nil {
			t.Fatal(err)
		}
		if err := f.Prepare(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := f.Apply(t.Context(), update(1, c.issue(t, devapi.SVIDOptions{}), c.Bundle())); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("folder path is a file", func(t *testing.T) {
		f, _ := newFolder(t, Config{})
		writePlain(t, filepath.Dir(f.Dir()), map[string][]byte{filepath.Base(f.Dir()): []byte("a file")})
		if err := f.Prepare(t.Context()); err == nil {
			t.Fatal("Prepare on a regular file succeeded")
		}
	})
}

// outside is what an attacker who can write into the folder points links
// at: a file and a directory elsewhere that must survive untouched.
type outside struct {
	dir, file, subdir, subfile string
}

func newOutside(t *testing.T) outside {
	t.Helper()
	o := outside{dir: t.TempDir()}
	o.file = filepath.Join(o.dir, "passwd")
	o.subdir = filepath.Join(o.dir, "evil")
	o.subfile = filepath.Join(o.subdir, "svid.pem")
	if err := os.WriteFile(o.file, []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(o.subdir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(o.subfile, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	return o
}

func (o outside) check(t *testing.T) {
	t.Helper()
	if b, err := os.ReadFile(o.file); err != nil || string(b) != "root:x:0:0:root:/root:/bin/sh\n" {
		t.Errorf("the link target outside the folder changed: %q, %v", b, err)
	}
	if b, err := os.ReadFile(o.subfile); err != nil || string(b) != "keep me" {
		t.Errorf("the directory outside the folder changed: %q, %v", b, err)
	}
	entries, err := os.ReadDir(o.subdir)
	if err != nil || len(entries) != 1 {
		t.Errorf("the directory outside the folder holds %d entries (%v), want 1", len(entries), err)
	}
}

func TestPlantedLinksAreReplacedNeverFollowed(t *testing.T) {
	c := newCA(t, "example.org")
	tests := []struct {
		name string
		// plant returns name → link target, given the outside paths.
		plant func(o outside) map[string]string
		// afterFirstApply plants over a folder the bridge already wrote.
		afterFirstApply bool
	}{
		{name: "certificate name to a file outside", plant: func(o outside) map[string]string {
			return map[string]string{"svid.pem": o.file}
		}},
		{name: "every managed name to a file outside", plant: func(o outside) map[string]string {
			return map[string]string{"svid.pem": o.file, "svid_key.pem": o.file, "svid_bundle.pem": o.file, MarkerFileName: o.file}
		}},
		{name: "..data to a directory outside", plant: func(o outside) map[string]string {
			return map[string]string{DataLink: o.subdir, "svid.pem": DataLink + "/svid.pem"}
		}},
		{name: "..data relative out of the folder", plant: func(o outside) map[string]string {
			rel, _ := filepath.Rel("/", o.subdir)
			return map[string]string{DataLink: "../../../../../../../../" + rel}
		}},
		{name: "temporary names of the swap", plant: func(o outside) map[string]string {
			return map[string]string{dataTmpLink: o.subdir, linkTmpPrefix + "svid.pem": o.file}
		}},
		{name: "a ..name looking like a generation", plant: func(o outside) map[string]string {
			return map[string]string{"..2020_01_01_00_00_00.000000000-g1": o.subdir, DataLink: "..2020_01_01_00_00_00.000000000-g1"}
		}},
		{name: "replacing the links of a written folder", afterFirstApply: true, plant: func(o outside) map[string]string {
			return map[string]string{"svid_key.pem": o.file, DataLink: o.subdir}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := newOutside(t)
			f, _ := newFolder(t, Config{})
			if err := os.MkdirAll(f.Dir(), 0o755); err != nil {
				t.Fatal(err)
			}
			gen := uint64(1)
			if tt.afterFirstApply {
				if err := f.Prepare(t.Context()); err != nil {
					t.Fatal(err)
				}
				if err := f.Apply(t.Context(), update(gen, c.issue(t, devapi.SVIDOptions{}), c.Bundle())); err != nil {
					t.Fatal(err)
				}
				gen++
			}
			for name, target := range tt.plant(o) {
				path := filepath.Join(f.Dir(), name)
				if err := os.RemoveAll(path); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(target, path); err != nil {
					t.Fatal(err)
				}
			}

			if err := f.Prepare(t.Context()); err != nil {
				t.Fatal(err)
			}
			o.check(t)
			if err := f.Apply(t.Context(), update(gen, c.issue(t, devapi.SVIDOptions{}), c.Bundle())); err != nil {
				t.Fatal(err)
			}
			o.check(t)
			for _, name := range []string{"svid.pem", "svid_key.pem", "svid_bundle.pem", MarkerFileName} {
				if target, err := os.Readlink(filepath.Join(f.Dir(), name)); err != nil || target != DataLink+"/"+name {
					t.Errorf("%s -> %q (%v), want the bridge's link", name, target, err)
				}
			}
			data, err := os.Readlink(filepath.Join(f.Dir(), DataLink))
			if err != nil || !strings.HasPrefix(data, "..") || strings.ContainsRune(data, '/') {
				t.Errorf("..data -> %q (%v), want a generation in the folder", data, err)
			}
			if m, err := Inspect(InspectConfig{Dir: f.Dir()}); err != nil || m.Generation != gen {
				t.Errorf("Inspect = %+v, %v; want generation %d", m, err, gen)
			}
		})
	}
}

func TestPlantedSpecialFilesDoNotHang(t *testing.T) {
	c := newCA(t, "example.org")
	f, logs := newFolder(t, Config{})
	if err := os.MkdirAll(f.Dir(), 0o755); err != nil {
		t.Fatal(err)
	}
	// A FIFO blocks open(2) for reading until a writer comes; /dev/zero
	// never ends; a huge sparse file is all memory.
	if err := syscall.Mkfifo(filepath.Join(f.Dir(), "svid.pem"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/zero", filepath.Join(f.Dir(), "svid_key.pem")); err != nil {
		t.Fatal(err)
	}
	huge, err := os.Create(filepath.Join(f.Dir(), "svid_bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if err := huge.Truncate(1 << 30); err != nil {
		t.Fatal(err)
	}
	huge.Close()

	// A hang fails the test after testkit.Timeout instead of hanging it; this
	// is a bound, not a speed assertion.
	done := make(chan error, 1)
	go func() {
		_, err := Inspect(InspectConfig{Dir: f.Dir()})
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("Inspect = %v, want the FIFO reported as malformed", err)
		}
	case <-time.After(testkit.Timeout):
		t.Fatal("Inspect hangs on a FIFO at a managed name")
	}
	if err := f.Prepare(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := listDir(t, f.Dir()); len(got) != 0 {
		t.Errorf("Prepare left %v", got)
	}
	for _, want := range []string{"not a regular file", "larger than 1048576 bytes"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
	if _, err := os.Stat("/dev/zero"); err != nil {
		t.Errorf("/dev/zero: %v", err)
	}
	if err := f.Apply(t.Context(), update(1, c.issue(t, devapi.SVIDOptions{}), c.Bundle())); err != nil {
		t.Fatal(err)
	}
	if _, err := Inspect(InspectConfig{Dir: f.Dir()}); err != nil {
		t.Fatal(err)
	}
}

func TestGenerationFilesAreCreatedExclusively(t *testing.T) {
	o := newOutside(t)
	dir := t.TempDir()
	// A link where a generation file is about to be created: O_EXCL
	// refuses it instead of writing through it.
	if err := os.Symlink(o.file, filepath.Join(dir, "svid.pem")); err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	err = createNew(root, "svid.pem", []byte("secret"), 0o600, nil)
	if !errors.Is(err, os.ErrExist) {
		t.Fatalf("createNew over a link = %v, want ErrExist", err)
	}
	o.check(t)
}
