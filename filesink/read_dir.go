package filesink

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// maxFileSize: a real set is a few KiB; a planted link to /dev/zero must
// not exhaust memory.
const maxFileSize = 1 << 20

// setDir is a directory a set is read from: a handle that keeps every read
// inside it (or err), and its path for messages.
type setDir struct {
	root     *os.Root
	err      error
	path     string
	borrowed bool // root is someone else's to close
}

// openSetDir opens name inside parent, or the path name if parent is nil.
func openSetDir(parent *os.Root, name, path string) setDir {
	d := setDir{path: path}
	if parent == nil {
		d.root, d.err = os.OpenRoot(name)
	} else {
		d.root, d.err = parent.OpenRoot(name)
	}
	return d
}

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

// notAFile reports a FIFO, device, huge file or link out of the folder.
func notAFile(err error) bool {
	return errors.Is(err, errNotRegular) || errors.Is(err, errTooLarge) || errors.Is(err, errOutside)
}
