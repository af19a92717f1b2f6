package filesink

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// maxFileSize bounds what is read from a credential folder: a real set is
// a few KiB, and a planted link to /dev/zero or a huge file must not
// exhaust memory.
const maxFileSize = 1 << 20

// Reasons a managed name cannot be read as material; Prepare removes such
// a name like a malformed file.
var (
	errNotRegular = errors.New("not a regular file")
	errTooLarge   = fmt.Errorf("larger than %d bytes", maxFileSize)
)

// errOutside is a name that resolves out of the folder (a planted link):
// never followed, and removed by Prepare like a malformed file.
var errOutside = errors.New("leads out of the folder")

// readBoundedIn reads name through root, which keeps every step of the
// path, links included, inside the folder. It reads a regular file of at
// most maxFileSize bytes, opened without blocking so a FIFO planted at a
// managed name cannot hang the bridge or `wait`, and refuses anything but a
// regular file (devices, FIFOs, sockets; a directory is reported as EISDIR,
// as read(2) would).
func readBoundedIn(root *os.Root, name string) ([]byte, error) {
	fh, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		if escapes(err) {
			return nil, fmt.Errorf("%s: %w", name, errOutside)
		}
		return nil, err
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		// Not something Prepare may remove: reported as unreadable.
		return nil, &fs.PathError{Op: "read", Path: name, Err: syscall.EISDIR}
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: %w (%s)", name, errNotRegular, fi.Mode().Type())
	}
	if fi.Size() > maxFileSize {
		return nil, fmt.Errorf("%s: %w", name, errTooLarge)
	}
	// The size can change under us; never read past the bound.
	data, err := io.ReadAll(io.LimitReader(fh, maxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("%s: %w", name, errTooLarge)
	}
	return data, nil
}

// escapes reports os.Root's refusal of a path (a link) that leaves the
// root. The os package has no exported error for it; its text is stable.
func escapes(err error) bool {
	var pe *fs.PathError
	return errors.As(err, &pe) && pe.Err != nil && pe.Err.Error() == "path escapes from parent"
}

// checkFolder refuses a folder every user may write to (unless allowed):
// anyone could then plant links or files at the names consumers open, or
// remove the set. The sticky bit does not help: it stops removal, not the
// planting of names the bridge has not created yet.
func (f *Folder) checkFolder(root *os.Root) error {
	fi, err := root.Stat(".")
	if err != nil {
		return fmt.Errorf("filesink: folder: %w", err)
	}
	if fi.Mode().Perm()&0o002 != 0 && !f.cfg.AllowWorldWritableDir {
		return fmt.Errorf("filesink: folder %s is writable by every user (mode %04o), so anyone could replace the credentials; "+
			"remove the write bit for others (chmod o-w) or set allow_world_writable_dir", f.cfg.Dir, fi.Mode().Perm())
	}
	return nil
}

// openFolder creates the folder if missing and opens the handle every
// operation of one Prepare or Apply goes through. The path itself is the
// operator's; it is opened anew each time so that a recreated folder works.
func (f *Folder) openFolder() (*os.Root, error) {
	dir := f.cfg.Dir
	if err := os.MkdirAll(dir, folderMode); err != nil {
		return nil, fmt.Errorf("filesink: create folder: %w", err)
	}
	if fi, err := os.Stat(dir); err == nil && !fi.IsDir() {
		return nil, fmt.Errorf("filesink: folder %s is not a directory (%s)", dir, fi.Mode().Type())
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("filesink: open folder: %w", err)
	}
	if err := f.checkFolder(root); err != nil {
		root.Close()
		return nil, err
	}
	return root, nil
}
