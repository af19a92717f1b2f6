package filesink

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sds-bridge/sds-bridge/folderstate"
)

// Prepare cleans the folder up before the first Update, so that nothing
// stale is ever reported ready (the seed's incident: a certificate left by
// a previous pod). It creates the folder if missing and removes:
//   - the generation behind ..data, as a whole, if its set is not usable;
//   - files at the managed names (plain files left by another tool such as
//     spiffe-helper, or our links) that are expired, not yet valid,
//     malformed, whose key does not match the certificate or whose chain
//     does not verify against the folder's own trust domain bundle;
//   - every other generation directory and leftover temporary link.
//
// Each removed file is logged with the reason. Valid leftovers stay: they
// are correct material, and the first Update replaces them. A clean-up
// the disk did not let finish is marked ErrNotPrepared: the first Apply
// runs it again. The folder's directory is held from here on (see
// Config.Lock), and a directory above it that another uid can write is
// warned about once.
func (f *Folder) Prepare(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	root, err := f.openFolder()
	if err != nil {
		return err
	}
	if !f.warned {
		f.warned = true
		f.warnWritableParents()
	}
	if err := f.prepare(root, f.cfg.Now()); err != nil {
		return &notPreparedError{err}
	}
	return nil
}

// ErrNotPrepared marks a Prepare that failed on the disk (full, read-only,
// out of descriptors) rather than on the folder itself: the folder is not
// refused. Its clean-up runs again before the first swap, and a failure
// there fails that Apply, which is retried as any failed Apply is; nothing
// is reported ready meanwhile.
var ErrNotPrepared = errors.New("the folder's start-up clean-up did not finish")

// notPreparedError is a clean-up failure, marked ErrNotPrepared.
type notPreparedError struct{ err error }

func (e *notPreparedError) Error() string   { return e.err.Error() }
func (e *notPreparedError) Unwrap() []error { return []error{e.err, ErrNotPrepared} }

// prepare is Prepare's clean-up through the folder's handle.
func (f *Folder) prepare(root *os.Root, now time.Time) error {
	dir := f.cfg.Dir
	if err := f.removeTempLinks(root); err != nil {
		return err
	}

	keep, err := f.prepareData(root, now)
	if err != nil {
		return err
	}
	// The stable names as a consumer opens them.
	folder := folderstate.DirOf(root, dir)
	if err := f.removeStaleFiles(root, folder, now); err != nil {
		return err
	}
	// A generation left from before the start is normal after any stop
	// (the previous one stays for readers until the next swap): Info, not
	// a warning that would page someone on every restart. The logger
	// names the folder; the generation is a name inside it.
	for _, name := range f.removeGenerations(root, keep) {
		f.log.Info("folder: removed leftover generation directory", "generation_dir", name)
	}
	if err := syncDir(root); err != nil {
		return err
	}
	if m, findings := folderstate.Check(f.names.Names, folder, folderstate.ReadMarker(folder), now, 0); len(findings) == 0 {
		f.log.Info("folder: kept valid material from before the start",
			"spiffe_id", m.SPIFFEID, "serial", m.Serial, "not_after", m.NotAfter, "generation", m.Generation)
	}
	f.prepared = true
	return nil
}

// removeStaleFiles removes the files at the stable names that the reader
// finds unusable, as staleNames decides, and the marker with the
// certificate it describes.
func (f *Folder) removeStaleFiles(root *os.Root, folder folderstate.Dir, now time.Time) error {
	_, findings := folderstate.Check(f.names.Names, folder, nil, now, 0)
	removed := map[string]bool{}
	for _, fd := range findings {
		for _, name := range f.staleNames(fd) {
			if removed[name] {
				continue
			}
			ok, err := f.removeFile(root, name, fd.Err.Reason.String(), fd.Err.Detail)
			if err != nil {
				return err
			}
			removed[name] = ok
		}
	}
	if removed[f.names.CertFile()] {
		// The marker describes the certificate that just went away.
		if _, err := f.removeFile(root, MarkerFileName, "stale-marker", "describes removed material"); err != nil {
			return err
		}
	}
	return nil
}

// staleNames is the deletion policy: what Prepare removes because of a
// finding. Whatever is at a name but is no file (a FIFO, a device, a huge
// file, a link out of the folder) goes; a bad certificate or key takes its
// pair with it, as the two are only good together; a bad bundle file at a
// stable name goes. A missing or unreadable file, or one that is merely
// valid for less than wanted, stays: it is not stale.
func (f *Folder) staleNames(fd folderstate.Finding) []string {
	switch {
	case fd.NotAFile:
		return []string{fd.Name}
	case fd.Err.Reason == folderstate.ReasonMissing, fd.Err.Reason == folderstate.ReasonUnreadable,
		fd.Err.Reason == folderstate.ReasonExpiringSoon:
		return nil
	case fd.Part == folderstate.PartCredential:
		return f.names.Pair()
	case !strings.Contains(fd.Name, "/"):
		return []string{fd.Name}
	}
	// A bundle inside a generation subdirectory: it goes with its
	// generation, never alone through the stable link.
	return nil
}

// prepareData judges the generation behind ..data as a set and removes it
// with every link into it if it is not usable. It returns the name of the
// generation directory to keep ("" if none).
func (f *Folder) prepareData(root *os.Root, now time.Time) (string, error) {
	fi, err := root.Lstat(DataLink)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("inspect %s: %w", DataLink, err)
	}
	target, why, err := judgeDataLink(root, fi)
	if err != nil {
		return "", err
	}
	reason, detail := "broken-data-link", why
	if why == "" {
		if reason, detail = f.judgeGeneration(root, target, now); reason == "" {
			return target, nil
		}
	}
	return "", f.dropData(root, fi, reason, detail)
}

// judgeDataLink says why ..data (fi) cannot name a generation of ours, or
// returns what it names.
func judgeDataLink(root *os.Root, fi fs.FileInfo) (target, why string, err error) {
	if fi.Mode()&fs.ModeSymlink == 0 {
		return "", "not a symlink", nil
	}
	if target, err = root.Readlink(DataLink); err != nil {
		return "", "", fmt.Errorf("read %s: %w", DataLink, err)
	}
	// Only a generation directory inside the folder is ours to judge and
	// delete; a link elsewhere is dropped but its target left alone.
	if !strings.HasPrefix(target, "..") || strings.ContainsRune(target, '/') {
		return target, fmt.Sprintf("points outside the folder (%s)", target), nil
	}
	// Lstat: a "generation" that is itself a link (out of the folder) is
	// not one of ours.
	switch st, err := root.Lstat(target); {
	case err != nil:
		return target, fmt.Sprintf("points at a missing generation (%s)", target), nil
	case !st.IsDir():
		return target, fmt.Sprintf("points at a non-directory (%s)", target), nil
	}
	return target, "", nil
}

// judgeGeneration says why the generation target cannot stay current
// (reason "" when it can): its set is not usable, or it was written for
// another svid choice than the one now configured — valid, but a
// consumer must not be told it is ready on another identity.
func (f *Folder) judgeGeneration(root *os.Root, target string, now time.Time) (reason, detail string) {
	gen := folderstate.OpenDir(root, target, filepath.Join(f.cfg.Dir, target))
	defer gen.Close()
	written := folderstate.ReadMarker(gen)
	_, findings := folderstate.Check(f.names.Names, gen, written, now, 0)
	writtenFor := ""
	if written != nil {
		writtenFor = written.SVID
	}
	switch {
	case len(findings) > 0:
		return findings[0].Err.Reason.String(), "generation " + target + ": " + findings[0].Err.Detail
	case writtenFor != f.names.svid:
		return "other-svid", fmt.Sprintf("generation %s was written for svid %q, the folder now wants %q", target, writtenFor, f.names.svid)
	}
	return "", ""
}

// dropData removes every stable link and then ..data (fi). Links go first
// so that no stable name is ever left pointing into a generation that is
// half deleted; Prepare's removeGenerations deletes the generation
// directory itself.
func (f *Folder) dropData(root *os.Root, fi fs.FileInfo, reason, detail string) error {
	entries, err := readDirNames(root)
	if err != nil {
		return fmt.Errorf("list folder: %w", err)
	}
	for _, e := range entries {
		if e.Type()&fs.ModeSymlink != 0 && isStableLink(root, e.Name()) {
			if _, err := f.removeFile(root, e.Name(), reason, detail); err != nil {
				return err
			}
		}
	}
	if fi.IsDir() {
		// ..data is our name even when someone made it a directory.
		if err := root.RemoveAll(DataLink); err != nil {
			return fmt.Errorf("remove %s: %w", DataLink, err)
		}
		f.log.Warn("folder: removed directory", "path", filepath.Join(f.cfg.Dir, DataLink), "reason", reason, "why", detail)
		return nil
	}
	_, err = f.removeFile(root, DataLink, reason, detail)
	return err
}

// removeTempLinks drops the temporary links a crash in the middle of a swap
// can leave behind.
func (f *Folder) removeTempLinks(root *os.Root) error {
	entries, err := readDirNames(root)
	if err != nil {
		return fmt.Errorf("list folder: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || (name != dataTmpLink && !strings.HasPrefix(name, linkTmpPrefix)) {
			continue
		}
		if _, err := f.removeFile(root, name, "leftover-temporary", "left by an interrupted swap"); err != nil {
			return err
		}
	}
	return nil
}

// removeFile removes name (a file or a link, never a directory) and logs
// one line naming it and why. It reports whether something was removed.
func (f *Folder) removeFile(root *os.Root, name, reason, detail string) (bool, error) {
	path := filepath.Join(f.cfg.Dir, name)
	if fi, err := root.Lstat(name); err == nil && fi.IsDir() {
		// A directory at a managed name is not ours to delete; the swap
		// reports the name it cannot make.
		return false, nil
	}
	err := root.Remove(name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("remove stale file: %w", err)
	}
	f.log.Warn("folder: removed stale file", "file", path, "reason", reason, "why", detail)
	return true, nil
}
