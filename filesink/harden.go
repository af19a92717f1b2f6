package filesink

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/sds-bridge/sds-bridge/internal/flock"
)

// ErrFolderReplaced marks a swap refused because the folder's path no
// longer names the directory the bridge locked at start.
var ErrFolderReplaced = errors.New("the folder is no longer the directory the bridge locked at start")

// RefuseWorldWritable applies the world-writable rule before the lock file
// is made, so a refused folder gets nothing written; nil if dir is missing.
func RefuseWorldWritable(dir string, allow bool) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil
	}
	return worldWritable(dir, fi, allow)
}

// worldWritable refuses a folder every user may write to, unless allowed.
// The sticky bit does not help: it stops removal, not the planting of
// names the bridge has not created yet.
func worldWritable(dir string, fi fs.FileInfo, allow bool) error {
	if fi.Mode().Perm()&0o002 != 0 && !allow {
		return fmt.Errorf("folder %s is writable by every user (mode %04o), so anyone could replace the credentials; "+
			"remove the write bit for others (chmod o-w) or set allow_world_writable_dir", dir, fi.Mode().Perm())
	}
	return nil
}

// FolderLock is a folder's lock and a handle of the very directory locked,
// which the Folder given it writes whatever happens to the path.
type FolderLock struct {
	lock *flock.Lock
	root *os.Root
}

// LockFolder makes the folder at dir (created if missing) this process's;
// a second bridge fails here, naming the holder's pid.
func LockFolder(dir string) (*FolderLock, error) {
	root, err := openDir(dir)
	if err != nil {
		return nil, err
	}
	l, err := flock.AcquireIn(root, LockFileName)
	if err != nil {
		root.Close()
		return nil, err
	}
	return &FolderLock{lock: l, root: root}, nil
}

// Path is the lock file's path.
func (l *FolderLock) Path() string { return l.lock.Path() }

// Replaced describes what was at the lock file's name and was removed.
func (l *FolderLock) Replaced() string { return l.lock.Replaced() }

// Release gives the lock and the handle up, once the Folder is unused.
func (l *FolderLock) Release() {
	l.lock.Release()
	l.root.Close()
}

// openDir creates the folder if missing and opens it.
func openDir(dir string) (*os.Root, error) {
	if err := os.MkdirAll(dir, folderMode); err != nil {
		return nil, fmt.Errorf("create folder: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open folder: %w", err)
	}
	return root, nil
}

// openFolder returns the held handle, after checking that the path still
// names it: a link to /etc put in its place must not lead the bridge there.
func (f *Folder) openFolder() (*os.Root, error) {
	if f.root == nil {
		root, err := openDir(f.cfg.Dir)
		if err != nil {
			return nil, err
		}
		f.root = root
	}
	held, err := f.root.Stat(".")
	if err != nil {
		return nil, fmt.Errorf("folder: %w", err)
	}
	if err := f.stillAtPath(held); err != nil {
		return nil, err
	}
	if err := worldWritable(f.cfg.Dir, held, f.cfg.AllowWorldWritableDir); err != nil {
		return nil, err
	}
	return f.root, nil
}

// stillAtPath checks that the path, as a consumer resolves it, is held.
func (f *Folder) stillAtPath(held fs.FileInfo) error {
	there, err := os.Stat(f.cfg.Dir)
	if err == nil && os.SameFile(held, there) {
		return nil
	}
	now := "it is gone"
	switch lfi, lerr := os.Lstat(f.cfg.Dir); {
	case lerr != nil:
	case lfi.Mode()&fs.ModeSymlink != 0:
		target, _ := os.Readlink(f.cfg.Dir)
		now = "it is now a link to " + target
	default:
		now = "another " + kindOf(lfi.Mode()) + " is there now"
	}
	return &folderReplacedError{dir: f.cfg.Dir, now: now}
}

type folderReplacedError struct{ dir, now string }

func (e *folderReplacedError) Error() string {
	return fmt.Sprintf("folder %s is no longer the directory the bridge locked at start (%s); nothing is written until it is: "+
		"whoever can write %s renamed it. Put the directory back, or restart the bridge once that path can be trusted",
		e.dir, e.now, filepath.Dir(e.dir))
}

func (e *folderReplacedError) Unwrap() error { return ErrFolderReplaced }

// warnWritableParents warns about directories above the folder another uid
// can write: it can replace the folder (ErrFolderReplaced, no new sets).
func (f *Folder) warnWritableParents() {
	euid := os.Geteuid()
	child, err := os.Stat(f.cfg.Dir)
	if err != nil {
		return
	}
	for dir := filepath.Dir(f.cfg.Dir); ; dir = filepath.Dir(dir) {
		fi, err := os.Stat(dir)
		if err != nil {
			return
		}
		if who := writableByOthers(fi, child, euid); who != "" {
			f.log.Warn("folder: a directory above the folder can be written by "+who+
				", who can then rename the folder and put another directory or a link in its place. "+
				"The bridge then stops swapping (it writes only the directory it locked) until the folder is back: "+
				"make the directories above the folder writable only by root or the bridge's uid",
				"parent", dir, "mode", fmt.Sprintf("%04o", fi.Sys().(*syscall.Stat_t).Mode&0o7777))
		}
		if parent := filepath.Dir(dir); parent == dir {
			return
		}
		child = fi
	}
}

// writableByOthers names who but root and euid may rename child in dir
// (fi), "" if nobody; dir's owner counts whatever the mode (it can chmod).
func writableByOthers(fi, child fs.FileInfo, euid int) string {
	st, ok := fi.Sys().(*syscall.Stat_t)
	cst, cok := child.Sys().(*syscall.Stat_t)
	if !ok || !cok {
		return ""
	}
	trusted := func(uid uint32) bool { return uid == 0 || int(uid) == euid }
	perm := fi.Mode().Perm()
	switch {
	case !trusted(st.Uid):
		return fmt.Sprintf("its owner, uid %d", st.Uid)
	case fi.Mode()&fs.ModeSticky != 0:
		if perm&0o022 != 0 && !trusted(cst.Uid) {
			return fmt.Sprintf("uid %d, which owns the entry below it (the sticky bit lets an owner rename their own)", cst.Uid)
		}
	case perm&0o020 != 0:
		return fmt.Sprintf("group %d", st.Gid)
	case perm&0o002 != 0:
		return "every user"
	}
	return ""
}
