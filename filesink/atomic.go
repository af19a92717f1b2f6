// The atomic single file, and the durable create-and-fsync steps the
// generation swap is built from, all through an *os.Root: no link planted
// in the directory can lead a write out of it.

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

// Owner is chowned onto a written file: PostgreSQL wants its key owned by
// the database user with 0600, or by root with 0640.
type Owner struct {
	UID, GID int
}

// tempInfix: WriteFile's temporary file for name is "." + name + tempInfix
// + 12 lower-case hex digits; RemoveTemps removes those a crash left.
const tempInfix = ".tmp-"

// WriteFile atomically replaces the file at path, for files that change
// alone (a JWT-SVID). A path that is not a regular file is refused:
// replacing it would change something the caller did not create.
func WriteFile(path string, data []byte, mode os.FileMode, owner *Owner) (err error) {
	root, err := os.OpenRoot(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer root.Close()
	name := filepath.Base(path)
	if fi, err := root.Lstat(name); err == nil && !fi.Mode().IsRegular() {
		return fmt.Errorf("write %s: exists and is not a regular file (%s)", path, fi.Mode().Type())
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("write %s: %w", path, err)
	}
	var suffix [6]byte
	_, _ = rand.Read(suffix[:])
	tmp := "." + name + tempInfix + hex.EncodeToString(suffix[:])
	defer func() {
		if err != nil {
			_ = root.Remove(tmp)
		}
	}()
	if err := createNew(root, tmp, data, mode, owner); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// rename(2) replaces a link planted at name meanwhile; it never
	// writes through it.
	if err := root.Rename(tmp, name); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := syncDir(root); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// createNew creates name exclusively (O_EXCL follows no planted link), sets
// owner and mode before any byte and fsyncs it; the caller fsyncs dir.
func createNew(dir *os.Root, name string, data []byte, mode os.FileMode, owner *Owner) (err error) {
	fh, err := dir.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	defer func() {
		if cerr := fh.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close: %w", cerr)
		}
	}()
	if err := setOwnerAndMode(fh, owner, mode); err != nil {
		return err
	}
	if _, err := fh.Write(data); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if err := fh.Sync(); err != nil {
		return fmt.Errorf("fsync: %w", err)
	}
	return nil
}

// setOwnerAndMode chowns, then chmods: chown may clear mode bits, and the
// mode given at creation was subject to the umask.
func setOwnerAndMode(fh *os.File, owner *Owner, mode os.FileMode) error {
	if owner != nil {
		if err := fh.Chown(owner.UID, owner.GID); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	if err := fh.Chmod(mode); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	return nil
}

// syncDir makes a rename, create or remove in dir durable.
func syncDir(dir *os.Root) error {
	d, err := dir.Open(".")
	if err != nil {
		return fmt.Errorf("fsync directory: %w", err)
	}
	serr := d.Sync()
	cerr := d.Close()
	if serr != nil {
		return fmt.Errorf("fsync directory %s: %w", dir.Name(), serr)
	}
	if cerr != nil {
		return fmt.Errorf("close directory %s: %w", dir.Name(), cerr)
	}
	return nil
}

// RemoveTemps removes the temporary files WriteFile left for name in dir
// (a crash before the rename) and returns their names.
func RemoveTemps(dir, name string) ([]string, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("remove temporary files in %s: %w", dir, err)
	}
	defer root.Close()
	entries, err := readDirSorted(root, ".")
	if err != nil {
		return nil, fmt.Errorf("remove temporary files in %s: %w", dir, err)
	}
	var removed []string
	for _, e := range entries {
		if e.IsDir() || !isTempName(e.Name(), name) {
			continue
		}
		if err := root.Remove(e.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return removed, fmt.Errorf("remove temporary file %s: %w", filepath.Join(dir, e.Name()), err)
		}
		removed = append(removed, e.Name())
	}
	return removed, nil
}

// isTempName reports whether temp is exactly a name WriteFile makes for
// name: ".<name>.tmp-mine" is someone else's.
func isTempName(temp, name string) bool {
	rest, ok := strings.CutPrefix(temp, "."+name+tempInfix)
	if !ok || len(rest) != 12 {
		return false
	}
	_, err := hex.DecodeString(rest)
	return err == nil && strings.ToLower(rest) == rest
}
