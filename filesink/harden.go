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
// longer names the directory the bridge locked at start: whoever can write
// a parent renamed it away, and perhaps put a link to another directory in
// its place. Nothing is written until the path names that directory again.
var ErrFolderReplaced = errors.New("the folder is no longer the directory the bridge locked at start")

// RefuseWorldWritable is the open folder's world-writable rule for a folder that is not
// locked yet (nil if dir does not exist: it is created 0755): refused
// before its lock file is made, a folder gets nothing written into it.
func RefuseWorldWritable(dir string, allow bool) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil
	}
	return worldWritable(dir, fi, allow)
}

// worldWritable refuses a folder every user may write to (unless
// allowed): anyone could then plant links or files at the names consumers
// open, or remove the set. The sticky bit does not help: it stops
// removal, not the planting of names the bridge has not created yet.
func worldWritable(dir string, fi fs.FileInfo, allow bool) error {
	if fi.Mode().Perm()&0o002 != 0 && !allow {
		return fmt.Errorf("folder %s is writable by every user (mode %04o), so anyone could replace the credentials; "+
			"remove the write bit for others (chmod o-w) or set allow_world_writable_dir", dir, fi.Mode().Perm())
	}
	return nil
}

// FolderLock is a credential folder this process holds: its lock, and a
// handle of the very directory that was locked. The Folder given it
// (Config.Lock) writes that directory and no other, whatever happens to
// the path.
type FolderLock struct {
	lock *flock.Lock
	root *os.Root
}

// LockFolder makes the folder at dir (created if missing, empty) belong to
// this process: an exclusive lock on LockFileName in it, taken through the
// handle the folder is then written through, before any start-up clean-up
// or write. A second bridge on the folder fails here, naming the holder's
// pid. The lock needs no free space on the folder's disk.
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

// Replaced describes what was at the lock file's name that was not a
// bridge's lock file of this uid ("" if nothing): it was removed.
func (l *FolderLock) Replaced() string { return l.lock.Replaced() }

// Release gives the lock and the folder's handle up; call it once the
// Folder is no longer used.
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

// openFolder returns the handle every operation of one Prepare or swap
// goes through: the directory that was locked (Config.Lock), or else the
// one found at the first Prepare, held from then on. The path is looked up
// again only to check that it still names that directory: a parent's
// owner who renames the folder away and puts a link to /etc in its place
// must not lead the bridge there.
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

// stillAtPath checks that the folder's path, resolved as a consumer
// resolves it, is the directory the folder holds (held).
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

// folderReplacedError is ErrFolderReplaced for one folder, saying what is
// at its path and what the operator can do.
type folderReplacedError struct{ dir, now string }

func (e *folderReplacedError) Error() string {
	return fmt.Sprintf("folder %s is no longer the directory the bridge locked at start (%s); nothing is written until it is: "+
		"whoever can write %s renamed it. Put the directory back, or restart the bridge once that path can be trusted",
		e.dir, e.now, filepath.Dir(e.dir))
}

func (e *folderReplacedError) Unwrap() error { return ErrFolderReplaced }

// warnWritableParents warns once about every directory above the folder
// that another uid (not root) can write: that uid can rename the folder
// away and put another directory, or a link, in its place. The bridge then
// refuses to swap (ErrFolderReplaced) rather than follow, but the
// consumers stop getting new sets.
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

// writableByOthers names who, besides root and euid, may rename child
// within dir (fi); "" if nobody. The owner of dir counts whatever its mode
// (it can chmod); in a sticky directory only child's owner can.
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
