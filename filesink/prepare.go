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
)

// Prepare removes, before the first Update, whatever the reader finds
// stale (a certificate left by a previous pod), so it is never reported
// ready, and every other generation and temporary link; valid leftovers
// stay. A clean-up the disk did not let finish is marked ErrNotPrepared
// and rerun by the first Apply.
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

// ErrNotPrepared marks a Prepare that failed on the disk (full, read-only)
// rather than on the folder: the folder is not refused.
var ErrNotPrepared = errors.New("the folder's start-up clean-up did not finish")

type notPreparedError struct{ err error }

func (e *notPreparedError) Error() string   { return e.err.Error() }
func (e *notPreparedError) Unwrap() []error { return []error{e.err, ErrNotPrepared} }

// prepare is Prepare's clean-up. It checks the stable names only when
// they are not all our links into ..data, whose set it checked already.
func (f *Folder) prepare(root *os.Root, now time.Time) error {
	entries, err := readDirSorted(root, ".")
	if err != nil {
		return fmt.Errorf("list folder: %w", err)
	}
	if err := f.removeTempLinks(root, entries); err != nil {
		return err
	}
	keep, kept, err := f.prepareData(root, entries, now)
	if err != nil {
		return err
	}
	if kept == nil || !f.linkedIntoData(root, entries, kept) {
		if kept, err = f.removeStaleFiles(root, now); err != nil {
			return err
		}
	}
	// Normal after any stop (the previous one stays for readers): Info,
	// not a warning that pages someone on every restart.
	for _, name := range f.removeGenerations(root, entries, keep) {
		f.log.Info("folder: removed leftover generation directory", "generation_dir", name)
	}
	if err := syncDir(root); err != nil {
		return err
	}
	if kept != nil {
		f.log.Info("folder: kept valid material from before the start",
			"spiffe_id", kept.SPIFFEID, "serial", kept.Serial, "not_after", kept.NotAfter, "generation", kept.Generation)
	}
	f.prepared = true
	return nil
}

// linkedIntoData reports whether the folder reads as the generation m was
// checked from: every name the reader opens our link, none missing.
func (f *Folder) linkedIntoData(root *os.Root, entries []fs.DirEntry, m *Material) bool {
	linked := map[string]bool{}
	for _, e := range entries {
		name := e.Name()
		_, bundle := f.names.bundleTrustDomain(name)
		read := name == f.names.certFile() || name == f.names.keyFile() || name == f.names.ownBundleFile() ||
			name == f.names.bundleDir() || name == MarkerFileName || (bundle && f.names.Layout == LayoutSPIFFE)
		if !read {
			continue
		}
		if target, err := root.Readlink(name); err != nil || target != stableTarget(name) {
			return false
		}
		linked[name] = true
	}
	for _, name := range f.names.required(m.SPIFFEID.TrustDomain()) {
		if !linked[name] {
			return false
		}
	}
	return true
}

// removeStaleFiles removes what staleNames decides, and the marker with
// its certificate. It returns the set there if it is usable.
func (f *Folder) removeStaleFiles(root *os.Root, now time.Time) (*Material, error) {
	folder := setDir{root: root, path: f.cfg.Dir, borrowed: true}
	m, findings := checkSet(f.names, folder, readMarker(folder), now, 0)
	removed := map[string]bool{}
	for _, fd := range findings {
		for _, name := range f.staleNames(fd) {
			if removed[name] {
				continue
			}
			ok, err := f.removeFile(root, name, fd.Err.Reason.String(), fd.Err.Detail)
			if err != nil {
				return nil, err
			}
			removed[name] = ok
		}
	}
	if removed[f.names.certFile()] {
		if _, err := f.removeFile(root, MarkerFileName, "stale-marker", "describes removed material"); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// staleNames is the deletion policy: a bad certificate or key takes its
// pair with it; a missing, unreadable or expiring-soon file is not stale.
func (f *Folder) staleNames(fd finding) []string {
	switch {
	case notAFile(fd.Err.Err):
		return []string{fd.Name}
	case fd.Err.Reason == ErrMissing, fd.Err.Reason == ErrUnreadable,
		fd.Err.Reason == ErrExpiringSoon:
		return nil
	case fd.Name == f.names.certFile() || fd.Name == f.names.keyFile():
		return []string{f.names.certFile(), f.names.keyFile()}
	case !strings.Contains(fd.Name, "/"):
		return []string{fd.Name}
	}
	// A bundle in a generation's subdirectory goes with its generation.
	return nil
}

// prepareData removes ..data and every link into it if the generation it
// names is not usable; else it returns that generation and its set.
func (f *Folder) prepareData(root *os.Root, entries []fs.DirEntry, now time.Time) (string, *Material, error) {
	fi, err := root.Lstat(DataLink)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil, nil
	}
	if err != nil {
		return "", nil, fmt.Errorf("inspect %s: %w", DataLink, err)
	}
	target, why, err := judgeDataLink(root, fi)
	if err != nil {
		return "", nil, err
	}
	reason, detail := "broken-data-link", why
	if why == "" {
		var m *Material
		if m, reason, detail = f.judgeGeneration(root, target, now); reason == "" {
			return target, m, nil
		}
	}
	return "", nil, f.dropData(root, entries, fi, reason, detail)
}

// judgeDataLink says why ..data (fi) cannot name a generation of ours.
func judgeDataLink(root *os.Root, fi fs.FileInfo) (target, why string, err error) {
	if fi.Mode()&fs.ModeSymlink == 0 {
		return "", "not a symlink", nil
	}
	if target, err = root.Readlink(DataLink); err != nil {
		return "", "", fmt.Errorf("read %s: %w", DataLink, err)
	}
	// A link elsewhere is dropped, its target left alone.
	if !strings.HasPrefix(target, "..") || strings.ContainsRune(target, '/') {
		return target, fmt.Sprintf("points outside the folder (%s)", target), nil
	}
	// Lstat: a "generation" that is itself a link is not ours.
	switch st, err := root.Lstat(target); {
	case err != nil:
		return target, fmt.Sprintf("points at a missing generation (%s)", target), nil
	case !st.IsDir():
		return target, fmt.Sprintf("points at a non-directory (%s)", target), nil
	}
	return target, "", nil
}

// judgeGeneration says why the generation target cannot stay current
// ("" when it can): its set is not usable, or of another svid choice.
func (f *Folder) judgeGeneration(root *os.Root, target string, now time.Time) (m *Material, reason, detail string) {
	gen := openSetDir(root, target, filepath.Join(f.cfg.Dir, target))
	defer gen.Close()
	written := readMarker(gen)
	m, findings := checkSet(f.names, gen, written, now, 0)
	if len(findings) > 0 {
		return nil, findings[0].Err.Reason.String(), "generation " + target + ": " + findings[0].Err.Detail
	}
	if err := checkSVID(InspectConfig{SVID: f.cfg.SVID}, m, gen, written); err != nil {
		return nil, err.Reason.String(), err.Detail
	}
	return m, "", ""
}

// dropData removes every stable link, then ..data (fi): no stable name is
// left pointing into a half-deleted generation.
func (f *Folder) dropData(root *os.Root, entries []fs.DirEntry, fi fs.FileInfo, reason, detail string) error {
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
	_, err := f.removeFile(root, DataLink, reason, detail)
	return err
}

// removeTempLinks drops the temporary links an interrupted swap leaves.
func (f *Folder) removeTempLinks(root *os.Root, entries []fs.DirEntry) error {
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

// removeFile removes name (never a directory) and logs why. It reports
// whether something was removed.
func (f *Folder) removeFile(root *os.Root, name, reason, detail string) (bool, error) {
	path := filepath.Join(f.cfg.Dir, name)
	if fi, err := root.Lstat(name); err == nil && fi.IsDir() {
		// Not ours to delete; the swap reports the name it cannot make.
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
