package filesink

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
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
	// The directory is the caller's; inside it, every step goes through one
	// handle that no link planted in the directory can lead out of.
	root, err := os.OpenRoot(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("filesink: write %s: %w", path, err)
	}
	defer root.Close()
	name := filepath.Base(path)
	if fi, err := root.Lstat(name); err == nil && !fi.Mode().IsRegular() {
		return fmt.Errorf("filesink: write %s: exists and is not a regular file (%s)", path, fi.Mode().Type())
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("filesink: write %s: %w", path, err)
	}
	var suffix [6]byte
	_, _ = rand.Read(suffix[:])
	tmp := "." + name + tempInfix + hex.EncodeToString(suffix[:])
	defer func() {
		if err != nil {
			_ = root.Remove(tmp)
		}
	}()
	if err := writeNewFile(root, tmp, data, mode, owner); err != nil {
		return fmt.Errorf("filesink: write %s: %w", path, err)
	}
	// rename(2) replaces a link planted at name meanwhile; it never
	// writes through it.
	if err := root.Rename(tmp, name); err != nil {
		return fmt.Errorf("filesink: write %s: %w", path, err)
	}
	if err := syncDir(root); err != nil {
		return fmt.Errorf("filesink: write %s: %w", path, err)
	}
	return nil
}

// RemoveTemps removes the temporary files WriteFile left behind for name
// in dir (a crash between create and rename), through a handle of dir, and
// returns the names removed.
func RemoveTemps(dir, name string) ([]string, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("filesink: remove temporary files in %s: %w", dir, err)
	}
	defer root.Close()
	entries, err := readDirNames(root)
	if err != nil {
		return nil, fmt.Errorf("filesink: remove temporary files in %s: %w", dir, err)
	}
	var removed []string
	for _, e := range entries {
		// A directory is never one of WriteFile's temporary files.
		if e.IsDir() || !isTempName(e.Name(), name) {
			continue
		}
		if err := root.Remove(e.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return removed, fmt.Errorf("filesink: remove temporary file %s: %w", filepath.Join(dir, e.Name()), err)
		}
		removed = append(removed, e.Name())
	}
	return removed, nil
}

// isTempName reports whether temp is exactly a name WriteFile makes for
// name (TempPattern, with 12 lower-case hexadecimal digits for the star):
// ".<name>.tmp-mine" is someone else's.
func isTempName(temp, name string) bool {
	rest, ok := strings.CutPrefix(temp, "."+name+tempInfix)
	if !ok || len(rest) != 12 {
		return false
	}
	_, err := hex.DecodeString(rest)
	return err == nil && strings.ToLower(rest) == rest
}
