package filesink

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

const (
	// dataTmpLink is built next to ..data and renamed over it: rename(2) is
	// the only atomic way to repoint a symlink.
	dataTmpLink = "..data_tmp"
	// linkTmpPrefix names the temporary symlink that replaces a stable name.
	linkTmpPrefix = "..link_tmp."
	// generationTimeFormat has a fixed width so directory names sort by time
	// even across restarts, when generations start again at 1.
	generationTimeFormat = "2006_01_02_15_04_05.000000000"
)

// generationDirName is "..<timestamp>-g<generation>", with a counter added
// only if that name is taken (a frozen test clock, the same generation
// written twice).
func generationDirName(now time.Time, generation uint64, attempt int) string {
	name := fmt.Sprintf("..%s-g%d", now.UTC().Format(generationTimeFormat), generation)
	if attempt > 0 {
		name += fmt.Sprintf("-%d", attempt)
	}
	return name
}

// hooks lets a test act between the steps of a swap, as a fault or an
// attacker that can write the folder would.
type hooks struct {
	// afterMkdir runs right after a directory of a new generation was
	// created; name is relative to the folder ("..<ts>-g1", "..<ts>-g1/federated").
	afterMkdir func(name string)
}

func (f *Folder) afterMkdir(name string) {
	if f.hooks != nil && f.hooks.afterMkdir != nil {
		f.hooks.afterMkdir(name)
	}
}

// swap writes set into a new generation directory, makes it current by
// renaming a symlink over ..data, points the stable names at it and removes
// generations older than the previous one. It returns the new directory's
// name. Everything the consumers can see is fsynced before it returns.
func (f *Folder) swap(set *fileSet, generation uint64, now time.Time) (genName string, err error) {
	dir := f.cfg.Dir
	if err := os.MkdirAll(dir, folderMode); err != nil {
		return "", fmt.Errorf("filesink: create folder: %w", err)
	}
	if err := f.checkFolder(); err != nil {
		return "", err
	}
	genName, err = makeGenerationDir(dir, now, generation)
	if err != nil {
		return "", err
	}
	f.afterMkdir(genName)
	genPath := filepath.Join(dir, genName)
	swapped := false
	defer func() {
		// A half-written generation is never named by ..data; drop it so it
		// does not pile up. Once swapped in, it is live and must stay.
		if err != nil && !swapped {
			if rerr := os.RemoveAll(genPath); rerr != nil {
				f.log.Warn("filesink: remove unfinished generation directory", "path", genPath, "err", rerr)
			}
		}
	}()
	if f.cfg.Owner != nil {
		if err := os.Chown(genPath, f.cfg.Owner.UID, f.cfg.Owner.GID); err != nil {
			return "", fmt.Errorf("filesink: chown generation directory: %w", err)
		}
	}
	// Mkdir is subject to the umask; the configured mode is not.
	if err := os.Chmod(genPath, generationDirMode); err != nil {
		return "", fmt.Errorf("filesink: chmod generation directory: %w", err)
	}
	for _, sub := range set.dirs {
		if err := makeSubdir(filepath.Join(genPath, sub), f.cfg.Owner); err != nil {
			return "", err
		}
		f.afterMkdir(genName + "/" + sub)
	}
	for _, file := range set.files {
		if err := writeNewFile(filepath.Join(genPath, file.name), file.data, file.mode, f.cfg.Owner); err != nil {
			return "", err
		}
	}
	for _, sub := range set.dirs {
		if err := syncDir(filepath.Join(genPath, sub)); err != nil {
			return "", err
		}
	}
	if err := syncDir(genPath); err != nil {
		return "", err
	}
	// The generation's own entry must be durable before ..data may name it.
	if err := syncDir(dir); err != nil {
		return "", err
	}
	prev, _ := os.Readlink(filepath.Join(dir, DataLink))
	if err := replaceSymlink(dir, dataTmpLink, genName, DataLink); err != nil {
		return "", err
	}
	swapped = true

	want := make(map[string]bool, len(set.files))
	for _, file := range set.files {
		want[topName(file.name)] = true
	}
	for _, sub := range set.dirs {
		want[sub] = true
	}
	for name := range want {
		if err := ensureLink(dir, name); err != nil {
			return genName, err
		}
	}
	if err := f.removeStaleNames(want); err != nil {
		return genName, err
	}
	if err := syncDir(dir); err != nil {
		return genName, err
	}
	// The previous generation stays until the next swap: a reader that
	// resolved ..data just before this swap can still finish its set.
	for _, name := range f.removeGenerations(genName, prev) {
		f.log.Debug("filesink: removed old generation directory", "dir", name)
	}
	return genName, nil
}

func makeGenerationDir(dir string, now time.Time, generation uint64) (string, error) {
	for attempt := 0; attempt < 100; attempt++ {
		name := generationDirName(now, generation, attempt)
		err := mkdir(filepath.Join(dir, name), generationDirMode)
		if err == nil {
			return name, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("filesink: create generation directory: %w", err)
		}
	}
	return "", fmt.Errorf("filesink: create generation directory for generation %d: 100 names taken", generation)
}

// makeSubdir creates a directory inside a generation, with the same owner
// and mode as the generation directory itself.
func makeSubdir(path string, owner *Owner) error {
	if err := mkdir(path, generationDirMode); err != nil {
		return fmt.Errorf("filesink: create generation subdirectory: %w", err)
	}
	if owner != nil {
		if err := os.Chown(path, owner.UID, owner.GID); err != nil {
			return fmt.Errorf("filesink: chown generation subdirectory: %w", err)
		}
	}
	if err := os.Chmod(path, generationDirMode); err != nil {
		return fmt.Errorf("filesink: chmod generation subdirectory: %w", err)
	}
	return nil
}

// writeNewFile creates path exclusively (a generation directory is never
// written twice) and makes it durable.
func writeNewFile(path string, data []byte, mode os.FileMode, owner *Owner) (err error) {
	fh, err := openFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("filesink: write generation file: %w", err)
	}
	defer func() {
		if cerr := fh.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("filesink: close generation file: %w", cerr)
		}
	}()
	if owner != nil {
		if err := fh.Chown(owner.UID, owner.GID); err != nil {
			return fmt.Errorf("filesink: chown generation file: %w", err)
		}
	}
	// After chown (which may clear mode bits), and independent of the umask.
	if err := fh.Chmod(mode); err != nil {
		return fmt.Errorf("filesink: chmod generation file: %w", err)
	}
	if _, err := fh.Write(data); err != nil {
		return fmt.Errorf("filesink: write generation file: %w", err)
	}
	if err := fh.Sync(); err != nil {
		return fmt.Errorf("filesink: fsync generation file: %w", err)
	}
	return nil
}

func syncDir(path string) error {
	d, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("filesink: fsync directory: %w", err)
	}
	serr := d.Sync()
	cerr := d.Close()
	if serr != nil {
		return fmt.Errorf("filesink: fsync directory %s: %w", path, serr)
	}
	if cerr != nil {
		return fmt.Errorf("filesink: close directory %s: %w", path, cerr)
	}
	return nil
}

// replaceSymlink atomically makes dir/name a symlink to target, replacing
// whatever non-directory is there, via a temporary link renamed over it.
func replaceSymlink(dir, tmpName, target, name string) error {
	tmp := filepath.Join(dir, tmpName)
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("filesink: remove leftover link: %w", err)
	}
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("filesink: create link %s: %w", name, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("filesink: swap link %s: %w", name, err)
	}
	return nil
}

// stableTarget is where the stable name points: relative, so the folder
// can be mounted anywhere (a container sees it at another path).
func stableTarget(name string) string { return DataLink + "/" + name }

// ensureLink creates the stable name once and repairs it if it is not the
// expected symlink (a regular file left by another tool, a wrong target).
func ensureLink(dir, name string) error {
	if target, err := os.Readlink(filepath.Join(dir, name)); err == nil && target == stableTarget(name) {
		return nil
	}
	return replaceSymlink(dir, linkTmpPrefix+name, stableTarget(name), name)
}

// isStableLink reports whether dir/name is one of our symlinks into ..data.
func isStableLink(dir, name string) bool {
	target, err := os.Readlink(filepath.Join(dir, name))
	return err == nil && strings.HasPrefix(target, DataLink+"/")
}

// removeStaleNames removes stable names the current generation no longer
// has: our links into ..data (a trust domain that went away, a renamed
// file) and, in the spiffe layout, trust bundle files of trust domains that
// are no longer delivered.
func (f *Folder) removeStaleNames(want map[string]bool) error {
	dir := f.cfg.Dir
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("filesink: list folder: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if want[name] || strings.HasPrefix(name, "..") {
			continue
		}
		stale := false
		switch {
		case e.Type()&fs.ModeSymlink != 0:
			stale = isStableLink(dir, name)
		case e.Type().IsRegular() && f.names.layout == LayoutSPIFFE:
			_, stale = trustDomainOfBundleFile(name)
		}
		if !stale {
			continue
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("filesink: remove stale file: %w", err)
		}
		f.log.Info("filesink: removed file no longer in the current generation", "file", name)
	}
	return nil
}

// removeGenerations removes every generation directory ("..*" directories)
// except keep and returns the names removed. Failures are logged: a
// leftover directory is untidy, not wrong, and the next swap tries again.
func (f *Folder) removeGenerations(keep ...string) []string {
	dir := f.cfg.Dir
	entries, err := os.ReadDir(dir)
	if err != nil {
		f.log.Warn("filesink: list folder for old generations", "err", err)
		return nil
	}
	var removed []string
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() || !strings.HasPrefix(name, "..") || slices.Contains(keep, name) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			f.log.Warn("filesink: remove old generation directory", "dir", name, "err", err)
			continue
		}
		removed = append(removed, name)
	}
	return removed
}
