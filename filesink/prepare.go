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
// are correct material, and the first Update replaces them.
func (f *Folder) Prepare(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("filesink: prepare: %w", err)
	}
	root, err := f.openFolder()
	if err != nil {
		return err
	}
	defer root.Close()
	dir := f.cfg.Dir
	now := f.cfg.Now()
	if err := f.removeTempLinks(root); err != nil {
		return err
	}

	keep, err := f.prepareData(root, now)
	if err != nil {
		return err
	}

	// The stable names as a consumer opens them.
	folder := setDir{root: root, path: dir}
	_, problems := checkSet(f.names, folder, now, 0)
	removed := map[string]bool{}
	for _, p := range problems {
		for _, name := range p.remove {
			if removed[name] {
				continue
			}
			ok, err := f.removeFile(root, name, p.err.Reason.String(), p.err.Detail)
			if err != nil {
				return err
			}
			removed[name] = ok
		}
	}
	if removed[f.primaryName()] {
		// The marker describes the certificate that just went away.
		if _, err := f.removeFile(root, MarkerFileName, "stale-marker", "describes removed material"); err != nil {
			return err
		}
	}

	for _, name := range f.removeGenerations(root, keep) {
		f.log.Warn("filesink: removed leftover generation directory", "dir", filepath.Join(dir, name))
	}
	if err := syncDir(root); err != nil {
		return err
	}
	if m, problems := checkSet(f.names, folder, now, 0); len(problems) == 0 {
		f.log.Info("filesink: kept valid material from before the start",
			"spiffe_id", m.SPIFFEID, "serial", m.Serial, "not_after", m.NotAfter, "generation", m.Generation)
	}
	return nil
}

// primaryName is the file holding the certificate.
func (f *Folder) primaryName() string {
	if f.names.layout == LayoutSPIFFE {
		return CredentialFileName
	}
	return f.names.cert
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
		return "", fmt.Errorf("filesink: inspect %s: %w", DataLink, err)
	}
	why := ""
	target := ""
	if fi.Mode()&fs.ModeSymlink == 0 {
		why = "not a symlink"
	} else if target, err = root.Readlink(DataLink); err != nil {
		return "", fmt.Errorf("filesink: read %s: %w", DataLink, err)
	}
	// Only a generation directory inside the folder is ours to judge and
	// delete; a link elsewhere is dropped but its target left alone.
	ours := why == "" && strings.HasPrefix(target, "..") && !strings.ContainsRune(target, '/')
	if why == "" {
		// Lstat: a "generation" that is itself a link (out of the folder)
		// is not one of ours.
		switch st, err := root.Lstat(target); {
		case !ours:
			why = fmt.Sprintf("points outside the folder (%s)", target)
		case err != nil:
			why = fmt.Sprintf("points at a missing generation (%s)", target)
		case !st.IsDir():
			why = fmt.Sprintf("points at a non-directory (%s)", target)
		}
	}
	reason, detail := "broken-data-link", why
	if why == "" {
		gen := openSetDir(root, target, filepath.Join(f.cfg.Dir, target))
		_, problems := checkSet(f.names, gen, now, 0)
		written := readMarkerSVID(gen)
		gen.close()
		switch {
		case len(problems) > 0:
			reason, detail = problems[0].err.Reason.String(), "generation "+target+": "+problems[0].err.Detail
		case written != f.names.svid:
			// Valid, but another identity than the one now configured: a
			// consumer must not be told it is ready on it.
			reason = "other-svid"
			detail = fmt.Sprintf("generation %s was written for svid %q, the folder now wants %q", target, written, f.names.svid)
		default:
			return target, nil
		}
	}

	// Links go first so that no stable name is ever left pointing into a
	// generation that is half deleted.
	entries, err := readDirNames(root)
	if err != nil {
		return "", fmt.Errorf("filesink: list folder: %w", err)
	}
	for _, e := range entries {
		if e.Type()&fs.ModeSymlink != 0 && isStableLink(root, e.Name()) {
			if _, err := f.removeFile(root, e.Name(), reason, detail); err != nil {
				return "", err
			}
		}
	}
	link := filepath.Join(f.cfg.Dir, DataLink)
	if fi.IsDir() {
		// ..data is our name even when someone made it a directory.
		if err := root.RemoveAll(DataLink); err != nil {
			return "", fmt.Errorf("filesink: remove %s: %w", DataLink, err)
		}
		f.log.Warn("filesink: removed directory", "dir", link, "reason", reason, "why", detail)
	} else if _, err := f.removeFile(root, DataLink, reason, detail); err != nil {
		return "", err
	}
	// Prepare's removeGenerations deletes the generation directory itself.
	return "", nil
}

// removeTempLinks drops the temporary links a crash in the middle of a swap
// can leave behind.
func (f *Folder) removeTempLinks(root *os.Root) error {
	entries, err := readDirNames(root)
	if err != nil {
		return fmt.Errorf("filesink: list folder: %w", err)
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
		return false, fmt.Errorf("filesink: remove stale file: %w", err)
	}
	f.log.Warn("filesink: removed stale file", "file", path, "reason", reason, "why", detail)
	return true, nil
}
