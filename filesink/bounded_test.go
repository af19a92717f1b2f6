package filesink

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ReadIn reads a small regular file, and refuses without blocking what
// someone may plant at a name instead: a FIFO with no writer, a file over
// the bound, a directory, a link out of the directory.
func TestReadInReadsOnlyBoundedRegularFilesInside(t *testing.T) {
	outside := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(outside, []byte("outside"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, data := range map[string]string{"small": "hello", "big": strings.Repeat("x", 11)} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "out")); err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()

	if data, err := readIn(root, "small", 10); err != nil || string(data) != "hello" {
		t.Errorf("small = %q, %v", data, err)
	}
	for name, want := range map[string]error{"big": errTooLarge, "fifo": errNotRegular, "sub": syscall.EISDIR, "out": errOutside} {
		done := make(chan error, 1)
		go func() {
			_, err := readIn(root, name, 10)
			done <- err
		}()
		select {
		case err := <-done:
			if !errors.Is(err, want) {
				t.Errorf("%s: %v, want %v", name, err, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: ReadIn blocks", name)
		}
	}
	if _, err := readIn(root, "big", 10); err == nil || !strings.Contains(err.Error(), "larger than 10 bytes") {
		t.Errorf("big: %v, want the bound named", err)
	}
}
