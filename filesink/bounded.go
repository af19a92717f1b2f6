// Reading files someone else may have planted, shared by the writer and
// the reader: only a regular file of a bounded size is read, opened without
// blocking and never through a link out of its directory, so a FIFO, a
// device or a huge file can neither hang the bridge nor exhaust its memory.

package filesink

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// Reasons a file is refused.
var (
	errNotRegular = errors.New("not a regular file")
	errTooLarge   = errors.New("larger than the bound")
	// errOutside is a name that resolves out of the directory (a planted
	// link): never followed.
	errOutside = errors.New("leads out of the folder")
)

// openFlags open a file for Read without blocking: opening a FIFO with
// no writer would otherwise hang.
const openFlags = os.O_RDONLY | syscall.O_NONBLOCK

// ReadIn opens name through root, which keeps every step of the path,
// links included, inside the directory, and reads it as Read does. A
// directory is reported as EISDIR, as read(2) would.
func readIn(root *os.Root, name string, limit int64) ([]byte, error) {
	fh, err := root.OpenFile(name, openFlags, 0)
	if err != nil {
		if escapes(err) {
			return nil, fmt.Errorf("%s: %w", name, errOutside)
		}
		return nil, err
	}
	defer fh.Close()
	if fi, err := fh.Stat(); err == nil && fi.IsDir() {
		return nil, &fs.PathError{Op: "read", Path: name, Err: syscall.EISDIR}
	}
	return readBounded(fh, name, limit)
}

// Escapes reports os.Root's refusal of a path (a link) that leaves the
// root. The os package has no exported error for it; its text is stable.
func escapes(err error) bool {
	var pe *fs.PathError
	return errors.As(err, &pe) && pe.Err != nil && pe.Err.Error() == "path escapes from parent"
}

// Read reads fh, opened with openFlags, if it is a regular file of at
// most limit bytes; name is for the error.
func readBounded(fh *os.File, name string, limit int64) ([]byte, error) {
	fi, err := fh.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: %w (%s)", name, errNotRegular, fi.Mode().Type())
	}
	if fi.Size() > limit {
		return nil, tooLargeError{name, limit}
	}
	// The size can change under us; never read past the bound.
	data, err := io.ReadAll(io.LimitReader(fh, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, tooLargeError{name, limit}
	}
	return data, nil
}

// tooLargeError names the bound, and is errTooLarge for errors.Is.
type tooLargeError struct {
	name  string
	limit int64
}

func (e tooLargeError) Error() string {
	return fmt.Sprintf("%s: larger than %d bytes", e.name, e.limit)
}

func (e tooLargeError) Is(target error) bool { return target == errTooLarge }
