package filesink

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "token")
	for _, content := range []string{"first", "second"} {
		if err := WriteFile(path, []byte(content), 0o640, nil); err != nil {
			t.Fatalf("WriteFile(%q): %v", content, err)
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != content {
			t.Errorf("content = %q, want %q", got, content)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o640 {
			t.Errorf("mode = %v, want 0640", fi.Mode().Perm())
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("dir holds %d entries, want only the file (no temporary left)", len(entries))
	}
}

func TestWriteFileRefusesNonRegular(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "elsewhere")
	if err := os.WriteFile(target, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "token")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{link, sub} {
		if err := WriteFile(path, []byte("x"), 0o600, nil); err == nil {
			t.Errorf("WriteFile(%s) = nil, want an error", path)
		}
	}
	if got, _ := os.ReadFile(target); string(got) != "keep" {
		t.Errorf("symlink target changed to %q", got)
	}
}

// TestRemoveTempsRemovesOnlyWriteFilesOwnNames: of the names that look
// like WriteFile's temporary files, only the exact ones it makes go (a link
// among them is removed, never followed); an operator's ".token.tmp-mine",
// a directory, and other files' temporaries stay.
func TestRemoveTempsRemovesOnlyWriteFilesOwnNames(t *testing.T) {
	t.Parallel()
	dir, outside := t.TempDir(), filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(outside, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{".token.tmp-0123456789ab", ".token.tmp-mine", ".token.tmp-0123456789AB", ".other.tmp-0123456789ab", "token"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(outside, filepath.Join(dir, ".token.tmp-abcdef012345")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, ".token.tmp-ffffffffffff"), 0o700); err != nil {
		t.Fatal(err)
	}
	removed, err := RemoveTemps(dir, "token")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{".token.tmp-0123456789ab", ".token.tmp-abcdef012345"}; !slices.Equal(removed, want) {
		t.Errorf("removed %v, want %v", removed, want)
	}
	want := []string{".other.tmp-0123456789ab", ".token.tmp-0123456789AB", ".token.tmp-ffffffffffff", ".token.tmp-mine", "token"}
	if got := listDir(t, dir); !slices.Equal(got, want) {
		t.Errorf("left %v, want %v", got, want)
	}
	if b, err := os.ReadFile(outside); err != nil || string(b) != "keep" {
		t.Errorf("the link's target: %q, %v", b, err)
	}
}

// BenchmarkWriteFile is one JWT-SVID-sized atomic replace, fsyncs
// included (so it measures the disk as much as the code).
func BenchmarkWriteFile(b *testing.B) {
	path := filepath.Join(b.TempDir(), "token")
	data := make([]byte, 800)
	for b.Loop() {
		if err := WriteFile(path, data, 0o600, nil); err != nil {
			b.Fatal(err)
		}
	}
}
