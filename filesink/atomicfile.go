package filesink

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

const tempInfix = ".tmp-"

// TempPattern is the filepath.Glob pattern of the temporary files
// WriteFile uses for name; a crash can leave one behind.
func TempPattern(name string) string { return "." + name + tempInfix + "*" }

// WriteFile replaces the single file at path with data, atomically: readers
// see the old content or the new one, never a mix. It is for files that
// change alone (a JWT-SVID, a JWT bundle), outside the generation swap that
// keeps a certificate, its key and its bundle consistent. The new content is
// written to a temporary file in the same directory (created with mode and
// owner before any byte is written), fsynced, renamed over path, and the
// directory is fsynced. A path that exists and is not a regular file
// (a directory, a symlink, a FIFO) is refused: replacing it would change
// something the caller did not create.
func WriteFile(path string, data []byte, mode os.FileMode, owner *Owner) (err error) {
	if fi, err := os.Lstat(path); err == nil && !fi.Mode().IsRegular() {
		return fmt.Errorf("filesink: write %s: exists and is not a regular file (%s)", path, fi.Mode().Type())
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("filesink: write %s: %w", path, err)
	}
	var suffix [6]byte
	_, _ = rand.Read(suffix[:])
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+tempInfix+hex.EncodeToString(suffix[:]))
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if err := writeNewFile(tmp, data, mode, owner); err != nil {
		return fmt.Errorf("filesink: write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("filesink: write %s: %w", path, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("filesink: write %s: %w", path, err)
	}
	return nil
}
