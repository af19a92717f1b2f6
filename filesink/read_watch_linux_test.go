package filesink

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// watchFolderChanges sees the folder appear (watching its parent), then
// changes inside it; stop ends the watch.
func TestWatchFolderChanges(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	changes, stop, err := watchFolderChanges(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	next := func(what string) {
		t.Helper()
		select {
		case _, ok := <-changes:
			if !ok {
				t.Fatalf("%s: the watch failed", what)
			}
		case <-time.After(testkit.Timeout):
			t.Fatalf("%s: no change reported", what)
		}
	}
	drain := func() {
		for {
			select {
			case <-changes:
			case <-time.After(50 * time.Millisecond):
				return
			}
		}
	}
	steps := []struct {
		what string
		do   func() error
	}{
		{"folder created", func() error { return os.Mkdir(dir, 0o755) }},
		{"file written", func() error { return os.WriteFile(filepath.Join(dir, "svid.pem"), []byte("x"), 0o644) }},
		{"link renamed into place", func() error {
			if err := os.Symlink("svid.pem", filepath.Join(dir, ".tmp")); err != nil {
				return err
			}
			return os.Rename(filepath.Join(dir, ".tmp"), filepath.Join(dir, "..data"))
		}},
		{"mode changed", func() error { return os.Chmod(filepath.Join(dir, "svid.pem"), 0o600) }},
		{"file removed", func() error { return os.Remove(filepath.Join(dir, "svid.pem")) }},
	}
	for _, s := range steps {
		drain()
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.what, err)
		}
		next(s.what)
	}
}

func TestWatchFolderChangesNeedsTheParent(t *testing.T) {
	if _, _, err := watchFolderChanges(filepath.Join(t.TempDir(), "missing", "certs")); err == nil {
		t.Fatal("no error for a folder whose parent does not exist; wait would never hear of it")
	}
}
