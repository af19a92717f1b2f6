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
	dir := f.cfg.Dir
	if err := os.MkdirAll(dir, folderMode); err != nil {
		return fmt.Errorf("filesink: create folder: %w", err)
	}
	if err := f.checkFolder(); err != nil {
		return err
	}
	now := f.cfg.Now()
	if err := f.removeTempLinks(); err != nil {
		return err
	}

	keep, err := f.prepareData(now)
	if err != nil {
		return err
	}

	// The stable names as a consumer opens them.
	_, problems := checkSet(f.names, dir, now, 0)
	removed := map[string]bool{}
	for _, p := range problems {
		for _, name := range p.remove {
			if removed[name] {
				continue
			}
			ok, err := f.removeFile(name, p.err.Reason.String(), p.err.Detail)
			if err != nil {
				return err
			}
			removed[name] = ok
		}
	}
	if removed[f.primaryName()] {
		// The marker describes the certificate that just went away.
		if _, err := f.removeFile(MarkerFileName, "stale-marker", "describes removed material"); err != nil {
			return err
		}
	}

	for _, name := range f.removeGenerations(keep) {
		f.log.Warn("filesink: removed leftover generation directory", "dir", filepath.Join(dir, name))
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	if m, problems := checkSet(f.names, dir, now, 0); len(problems) == 0 {
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
func (f *Folder) prepareData(now time.Time) (string, error) {
	dir := f.cfg.Dir
	link := filepath.Join(dir, DataLink)
	fi, err := os.Lstat(link)
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
	} else if target, err = os.Readlink(link); err != nil {
		return "", fmt.Errorf("filesink: read %s: %w", DataLink, err)
	}
	// Only a generation directory inside the folder is ours to judge and
	// delete; a link elsewhere is dropped but its target left alone.
	ours := why == "" && strings.HasPrefix(target, "..") && !strings.ContainsRune(target, '/')
	if why == "" {
		// Lstat: a "generation" that is itself a link (out of the folder)
		// is not one of ours.
		switch st, err := os.Lstat(filepath.Join(dir, target)); {
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
		_, problems := checkSet(f.names, filepath.Join(dir, target), now, 0)
		switch written := readMarkerSVID(filepath.Join(dir, target, MarkerFileName)); {
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
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("filesink: list folder: %w", err)
	}
	for _, e := range entries {
		if e.Type()&fs.ModeSymlink != 0 && isStableLink(dir, e.Name()) {
			if _, err := f.removeFile(e.Name(), reason, detail); err != nil {
				return "", err
			}
		}
	}
	if err := os.RemoveAll(link); err != nil {
		return "", fmt.Errorf("filesink: remove %s: %w", DataLink, err)
	}
	f.log.Warn("filesink: removed stale file", "file", link, "reason", reason, "why", detail)
	// Prepare's removeGenerations deletes the generation directory itself.
	return "", nil
}

// removeTempLinks drops the temporary links a crash in the middle of a swap
// can leave behind.
func (f *Folder) removeTempLinks() error {
	entries, err := os.ReadDir(f.cfg.Dir)
	if err != nil {
		return fmt.Errorf("filesink: list folder: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || (name != dataTmpLink && !strings.HasPrefix(name, linkTmpPrefix)) {
			continue
		}
		if _, err := f.removeFile(name, "leftover-temporary", "left by an interrupted swap"); err != nil {
			return err
		}
	}
	return nil
}

// removeFile removes dir/name (a file or a link, never a directory) and logs
// one line naming it and why. It reports whether something was removed.
func (f *Folder) removeFile(name, reason, detail string) (bool, error) {
	path := filepath.Join(f.cfg.Dir, name)
	err := os.Remove(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("filesink: remove stale file: %w", err)
	}
	f.log.Warn("filesink: removed stale file", "file", path, "reason", reason, "why", detail)
	return true, nil
}
