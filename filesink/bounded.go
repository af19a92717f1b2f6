// Reading files someone else may have planted, for the writer and the
// reader: a FIFO, a device or a huge file must neither hang the bridge nor
// exhaust its memory.

package filesink

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"syscall"
)

var (
	errNotRegular = errors.New("not a regular file")
	errTooLarge   = errors.New("larger") // "…: larger than N bytes"
	errOutside    = errors.New("leads out of the folder")
)

// readIn reads name through root if it is a regular file of at most limit
// bytes. O_NONBLOCK: opening a FIFO with no writer would hang. A directory
// is EISDIR, as read(2) says.
func readIn(root *os.Root, name string, limit int64) ([]byte, error) {
	fh, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		if escapes(err) {
			return nil, fmt.Errorf("%s: %w", name, errOutside)
		}
		return nil, err
	}
	defer fh.Close()
	fi, err := fh.Stat()
	switch {
	case err != nil:
		return nil, err
	case fi.IsDir():
		return nil, &fs.PathError{Op: "read", Path: name, Err: syscall.EISDIR}
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("%s: %w (%s)", name, errNotRegular, fi.Mode().Type())
	}
	// The size can change under us: never read past the bound.
	data, err := io.ReadAll(io.LimitReader(fh, limit+1))
	if err == nil && max(fi.Size(), int64(len(data))) > limit {
		return nil, fmt.Errorf("%s: %w than %d bytes", name, errTooLarge, limit)
	}
	return data, err
}

// escapes reports os.Root's refusal of a link out of the root; os exports
// no error for it, and its text is stable.
func escapes(err error) bool {
	var pe *fs.PathError
	return errors.As(err, &pe) && pe.Err != nil && pe.Err.Error() == "path escapes from parent"
}

// readDirSorted lists the directory name through root, sorted by name.
func readDirSorted(root *os.Root, name string) ([]fs.DirEntry, error) {
	d, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	entries, err := d.ReadDir(-1)
	slices.SortFunc(entries, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return entries, err
}
