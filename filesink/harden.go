package filesink

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// mkdir and openFile create a generation: variables so that tests can make
// them fail as a full or read-only disk does (root, which runs the tests,
// is not stopped by permissions).
var (
	mkdir    = os.Mkdir
	openFile = os.OpenFile
)

// maxFileSize bounds what is read from a credential folder (and from a pid
// file): a real set is a few KiB, and a planted link to /dev/zero or a huge
// file must not exhaust memory.
const maxFileSize = 1 << 20

// Reasons a managed name cannot be read as material; Prepare removes such
// a name like a malformed file.
var (
	errNotRegular = errors.New("not a regular file")
	errTooLarge   = fmt.Errorf("larger than %d bytes", maxFileSize)
)

// readBounded reads a regular file of at most maxFileSize bytes. It opens
// without blocking, so a FIFO planted at a managed name cannot hang the
// bridge or `wait`, and refuses anything but a regular file (devices,
// FIFOs, sockets; a directory is reported as EISDIR, as read(2) would).
func readBounded(path string) ([]byte, error) {
	fh, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		// Not something Prepare may remove: reported as unreadable.
		return nil, &fs.PathError{Op: "read", Path: path, Err: syscall.EISDIR}
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: %w (%s)", path, errNotRegular, fi.Mode().Type())
	}
	if fi.Size() > maxFileSize {
		return nil, fmt.Errorf("%s: %w", path, errTooLarge)
	}
	// The size can change under us; never read past the bound.
	data, err := io.ReadAll(io.LimitReader(fh, maxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("%s: %w", path, errTooLarge)
	}
	return data, nil
}

// checkFolder refuses a folder every user may write to (unless allowed):
// anyone could then plant links or files at the names consumers open, or
// remove the set. The sticky bit does not help: it stops removal, not the
// planting of names the bridge has not created yet.
func (f *Folder) checkFolder() error {
	fi, err := os.Stat(f.cfg.Dir)
	if err != nil {
		return fmt.Errorf("filesink: folder: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("filesink: folder %s is not a directory (%s)", f.cfg.Dir, fi.Mode().Type())
	}
	if fi.Mode().Perm()&0o002 != 0 && !f.cfg.AllowWorldWritableDir {
		return fmt.Errorf("filesink: folder %s is writable by every user (mode %04o), so anyone could replace the credentials; "+
			"remove the write bit for others (chmod o-w) or set allow_world_writable_dir", f.cfg.Dir, fi.Mode().Perm())
	}
	return nil
}
