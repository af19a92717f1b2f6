package filesink

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// maxFileSize bounds what is read from a credential folder: a real set is
// a few KiB, and a planted link to /dev/zero or a huge file must not
// exhaust memory.
const maxFileSize = 1 << 20

// setDir is a directory a set is read from: a handle that keeps every read
// inside it (none if it could not be opened: err says why), and its path
// for messages.
type setDir struct {
	root *os.Root
	err  error
	path string
	// borrowed: root is someone else's to close.
	borrowed bool
}

// dirOf reads through root, an open handle of the directory at path; the
// caller keeps closing root.
func dirOf(root *os.Root, path string) setDir { return setDir{root: root, path: path, borrowed: true} }

// openSetDir opens name inside parent, or the path name if parent is nil;
// path is for messages. Close it.
func openSetDir(parent *os.Root, name, path string) setDir {
	d := setDir{path: path}
	if parent == nil {
		d.root, d.err = os.OpenRoot(name)
	} else {
		d.root, d.err = parent.OpenRoot(name)
	}
	return d
}

// Close closes a setDir openSetDir opened; a borrowed handle stays open.
func (d setDir) Close() {
	if d.root != nil && !d.borrowed {
		d.root.Close()
	}
}

func (d setDir) join(name string) string { return filepath.Join(d.path, name) }

func (d setDir) read(name string) ([]byte, error) {
	if d.root == nil {
		return nil, d.err
	}
	return readIn(d.root, name, maxFileSize)
}

// readDir lists the directory name, sorted; nothing if it cannot be read.
func (d setDir) readDir(name string) []fs.DirEntry {
	if d.root == nil {
		return nil
	}
	entries, _ := readDirSorted(d.root, name)
	return entries
}

func (d setDir) stat(name string) error {
	if d.root == nil {
		return d.err
	}
	_, err := d.root.Stat(name)
	return err
}

// notAFile reports a name that holds no file one could read as material
// (a FIFO, a device, a huge file, a link out of the folder).
func notAFile(err error) bool {
	return errors.Is(err, errNotRegular) || errors.Is(err, errTooLarge) || errors.Is(err, errOutside)
}
