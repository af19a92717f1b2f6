package filesink

import (
	"fmt"
	"os"

	"github.com/sds-bridge/sds-bridge/internal/flock"
)

// checkFolder refuses a folder every user may write to (unless allowed):
// anyone could then plant links or files at the names consumers open, or
// remove the set. The sticky bit does not help: it stops removal, not the
// planting of names the bridge has not created yet.
func (f *Folder) checkFolder(root *os.Root) error {
	fi, err := root.Stat(".")
	if err != nil {
		return fmt.Errorf("folder: %w", err)
	}
	if fi.Mode().Perm()&0o002 != 0 && !f.cfg.AllowWorldWritableDir {
		return fmt.Errorf("folder %s is writable by every user (mode %04o), so anyone could replace the credentials; "+
			"remove the write bit for others (chmod o-w) or set allow_world_writable_dir", f.cfg.Dir, fi.Mode().Perm())
	}
	return nil
}

// LockFolder makes the folder at dir (created if missing, empty) belong to
// this process: an exclusive lock on LockFileName in it, taken before any
// start-up clean-up or write. A second bridge on the folder fails here,
// naming the holder's pid.
func LockFolder(dir string) (*flock.Lock, error) {
	if err := os.MkdirAll(dir, folderMode); err != nil {
		return nil, fmt.Errorf("create folder: %w", err)
	}
	return flock.Acquire(dir, LockFileName)
}

// openFolder creates the folder if missing and opens the handle every
// operation of one Prepare or Apply goes through. The path itself is the
// operator's; it is opened anew each time so that a recreated folder works.
func (f *Folder) openFolder() (*os.Root, error) {
	dir := f.cfg.Dir
	if err := os.MkdirAll(dir, folderMode); err != nil {
		return nil, fmt.Errorf("create folder: %w", err)
	}
	if fi, err := os.Stat(dir); err == nil && !fi.IsDir() {
		return nil, fmt.Errorf("folder %s is not a directory (%s)", dir, fi.Mode().Type())
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open folder: %w", err)
	}
	if err := f.checkFolder(root); err != nil {
		root.Close()
		return nil, err
	}
	return root, nil
}
