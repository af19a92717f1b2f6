package filesink

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"
)

const (
	// Temporary links are renamed over ..data and the stable names: rename(2)
	// is the only atomic way to repoint a symlink.
	dataTmpLink   = "..data_tmp"
	linkTmpPrefix = "..link_tmp."
	// generationTimeFormat has a fixed width so names sort by time across
	// restarts, when generations start again at 1.
	generationTimeFormat = "2006_01_02_15_04_05.000000000"
)

// generationDirName is "..<timestamp>-g<generation>", plus a counter if
// that name is taken.
func generationDirName(now time.Time, generation uint64, attempt int) string {
	name := fmt.Sprintf("..%s-g%d", now.UTC().Format(generationTimeFormat), generation)
	if attempt > 0 {
		name += fmt.Sprintf("-%d", attempt)
	}
	return name
}

// generationNamePattern matches exactly generationDirName's names: only
// these are ever removed as generations.
var generationNamePattern = regexp.MustCompile(`^\.\.\d{4}_\d\d_\d\d_\d\d_\d\d_\d\d\.\d{9}-g\d+(-\d+)?$`)

// isOwnName reports whether a ".." name in the folder is one the bridge makes.
func isOwnName(name string) bool {
	return name == DataLink || name == dataTmpLink || name == LockFileName ||
		strings.HasPrefix(name, linkTmpPrefix) || generationNamePattern.MatchString(name)
}

// hooks let a test act between a swap's steps as an attacker would, or
// fail one as a full disk would (root runs the tests: no permission stops it).
type hooks struct {
	afterMkdir func(name string) // name is relative to the folder
	fault      func(op, name string) error
}

func (f *Folder) afterMkdir(name string) {
	if f.hooks != nil && f.hooks.afterMkdir != nil {
		f.hooks.afterMkdir(name)
	}
}

func (f *Folder) fault(op, name string) error {
	if f.hooks != nil && f.hooks.fault != nil {
		return f.hooks.fault(op, name)
	}
	return nil
}

// swap writes set into a new generation, renames a link over ..data onto
// it, links the stable names and removes older generations, all fsynced.
// Every step goes through root or a handle it created: a link swapped in
// meanwhile fails the swap, never leads a create, chown or chmod out.
func (f *Folder) swap(root *os.Root, set *fileSet, generation uint64, now time.Time) (genName string, err error) {
	genName, err = f.makeGenerationDir(root, now, generation)
	if err != nil {
		return "", err
	}
	f.afterMkdir(genName)
	created := genName // a failed swap returns "" as genName
	swapped := false
	defer func() {
		// An unfinished generation goes (a link put in its place: the link
		// only); once swapped in, it is live.
		if err != nil && !swapped {
			if rerr := root.RemoveAll(created); rerr != nil {
				f.log.Warn("folder: remove unfinished generation directory", "generation_dir", created, "err", rerr)
			}
		}
	}()
	gen, err := f.writeGeneration(root, genName, set)
	if err != nil {
		return "", err
	}
	defer gen.Close()
	// ..data must name the directory just written, not what an attacker
	// put at its name meanwhile.
	if err := sameDir(root, genName, gen); err != nil {
		return "", fmt.Errorf("generation directory: %w", err)
	}
	prev, _ := root.Readlink(DataLink)
	if err := replaceSymlink(root, dataTmpLink, genName, DataLink); err != nil {
		return "", err
	}
	swapped = true
	// The previous generation stays for readers that resolved ..data
	// before this swap; older ones go whatever fails below, or each failed
	// swap would leave one more copy of a private key.
	entries, lerr := readDirSorted(root, ".")
	defer func() {
		for _, name := range f.removeGenerations(root, entries, genName, prev) {
			f.log.Debug("folder: removed old generation directory", "generation_dir", name)
		}
	}()
	if err := f.linkStableNames(root, set, entries, lerr); err != nil {
		return genName, fmt.Errorf("%w: %w", ErrStableName, err)
	}
	return genName, nil
}

// writeGeneration fills genName with set and makes it durable, its entry
// in the folder included, before ..data may name it.
func (f *Folder) writeGeneration(root *os.Root, genName string, set *fileSet) (_ *os.Root, err error) {
	gen, err := openOwnDir(root, genName, f.cfg.Owner)
	if err != nil {
		return nil, fmt.Errorf("generation directory: %w", err)
	}
	defer func() {
		if err != nil {
			gen.Close()
		}
	}()
	dirs := map[string]*os.Root{".": gen}
	for _, sub := range set.dirs {
		err := f.fault("mkdir", path.Join(genName, sub))
		if err == nil {
			err = gen.Mkdir(sub, generationDirMode)
		}
		if err != nil {
			return nil, fmt.Errorf("create generation subdirectory: %w", err)
		}
		f.afterMkdir(genName + "/" + sub)
		d, err := openOwnDir(gen, sub, f.cfg.Owner)
		if err != nil {
			return nil, fmt.Errorf("generation subdirectory: %w", err)
		}
		defer d.Close()
		dirs[sub] = d
	}
	for _, file := range set.files {
		d, ok := dirs[path.Dir(file.name)]
		if !ok {
			return nil, fmt.Errorf("write generation file %s: no directory %s in the set", file.name, path.Dir(file.name))
		}
		if err := f.fault("create", path.Join(genName, file.name)); err != nil {
			return nil, fmt.Errorf("write generation file: %w", err)
		}
		// Exclusive: a generation directory is never written twice.
		if err := createNew(d, path.Base(file.name), file.data, file.mode, f.cfg.Owner); err != nil {
			return nil, fmt.Errorf("generation file %s: %w", path.Base(file.name), err)
		}
	}
	for _, sub := range set.dirs {
		if err := syncDir(dirs[sub]); err != nil {
			return nil, err
		}
	}
	if err := syncDir(gen); err != nil {
		return nil, err
	}
	if err := syncDir(root); err != nil {
		return nil, err
	}
	return gen, nil
}

// linkStableNames links set's stable names, removes stale ones (entries is
// the folder's listing) and fsyncs; one name that fails stops no other.
func (f *Folder) linkStableNames(root *os.Root, set *fileSet, entries []fs.DirEntry, lerr error) error {
	want := make(map[string]bool, len(set.files))
	for _, file := range set.files {
		top, _, _ := strings.Cut(file.name, "/") // "federated/x.pem": its directory's link
		want[top] = true
	}
	for _, sub := range set.dirs {
		want[sub] = true
	}
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(want)) {
		err := ensureLink(root, name)
		switch {
		case err == nil:
			delete(f.unmakeable, name)
		case !f.unmakeable[name]: // logged once, not on every rotation
			f.unmakeable[name] = true
			f.log.Error("folder: a stable name cannot be made; consumers opening it do not get the current generation until what is there is removed",
				"name", name, "err", err)
		}
		errs = append(errs, err)
	}
	if lerr != nil {
		errs = append(errs, fmt.Errorf("list folder: %w", lerr))
	}
	errs = append(errs, f.removeStaleNames(root, entries, want), syncDir(root))
	return errors.Join(errs...)
}

func (f *Folder) makeGenerationDir(root *os.Root, now time.Time, generation uint64) (string, error) {
	for attempt := 0; attempt < 100; attempt++ {
		name := generationDirName(now, generation, attempt)
		err := f.fault("mkdir", name)
		if err == nil {
			err = root.Mkdir(name, generationDirMode)
		}
		if err == nil {
			return name, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("create generation directory: %w", err)
		}
	}
	return "", fmt.Errorf("create generation directory for generation %d: 100 names taken", generation)
}

// openOwnDir opens the directory just created at name and sets owner and
// mode through the handle, which must be the very entry at name: a link an
// attacker put in its place must not lead the chown.
func openOwnDir(parent *os.Root, name string, owner *Owner) (_ *os.Root, err error) {
	d, err := parent.OpenRoot(name)
	if err != nil {
		if escapes(err) {
			return nil, fmt.Errorf("%s was replaced by a link out of the folder", name)
		}
		return nil, err
	}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	// OpenRoot follows a link that stays inside parent.
	if err := sameDir(parent, name, d); err != nil {
		return nil, err
	}
	fh, err := d.Open(".")
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	if err := setOwnerAndMode(fh, owner, generationDirMode); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return d, nil
}

// sameDir checks that the entry at name in parent (not followed if a link)
// is the directory d is a handle of.
func sameDir(parent *os.Root, name string, d *os.Root) error {
	opened, err := d.Stat(".")
	if err != nil {
		return err
	}
	there, err := parent.Lstat(name)
	if err != nil {
		return err
	}
	if !there.IsDir() || !os.SameFile(opened, there) {
		what := "another directory"
		if !there.IsDir() {
			what = "a " + kindOf(there.Mode())
		}
		return fmt.Errorf("%s was replaced while being written (%s in its place)", name, what)
	}
	return nil
}

// replaceSymlink atomically makes name (not a directory) a link to target.
func replaceSymlink(root *os.Root, tmpName, target, name string) error {
	if err := root.Remove(tmpName); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove leftover link: %w", err)
	}
	if err := root.Symlink(target, tmpName); err != nil {
		return fmt.Errorf("create link %s: %w", name, err)
	}
	if err := root.Rename(tmpName, name); err != nil {
		_ = root.Remove(tmpName)
		return fmt.Errorf("swap link %s: %w", name, err)
	}
	return nil
}

// stableTarget is relative so the folder can be mounted anywhere.
func stableTarget(name string) string { return DataLink + "/" + name }

// ensureLink makes name the stable link unless it already is.
func ensureLink(root *os.Root, name string) error {
	if target, err := root.Readlink(name); err == nil && target == stableTarget(name) {
		return nil
	}
	return replaceSymlink(root, linkTmpPrefix+name, stableTarget(name), name)
}

// isStableLink reports whether name is one of our symlinks into ..data.
func isStableLink(root *os.Root, name string) bool {
	target, err := root.Readlink(name)
	return err == nil && strings.HasPrefix(target, DataLink+"/")
}

// removeStaleNames removes our links into ..data that the generation no
// longer has and, in LayoutSPIFFE, bundle files of trust domains gone.
func (f *Folder) removeStaleNames(root *os.Root, entries []fs.DirEntry, want map[string]bool) error {
	for _, e := range entries {
		name := e.Name()
		if want[name] || strings.HasPrefix(name, "..") {
			continue
		}
		stale := false
		switch {
		case e.Type()&fs.ModeSymlink != 0:
			stale = isStableLink(root, name)
		case e.Type().IsRegular() && f.names.Layout == LayoutSPIFFE:
			_, stale = f.names.bundleTrustDomain(name)
		}
		if !stale {
			continue
		}
		if err := root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove stale file: %w", err)
		}
		f.log.Info("folder: removed file no longer in the current generation", "file", name)
	}
	return nil
}

// removeGenerations removes every generation in entries but keep. A failure
// is logged: a leftover is untidy, not wrong, and the next swap retries.
func (f *Folder) removeGenerations(root *os.Root, entries []fs.DirEntry, keep ...string) []string {
	var removed []string
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, "..") || slices.Contains(keep, name) {
			continue
		}
		if !isOwnName(name) {
			if !f.foreign[name] {
				f.foreign[name] = true
				f.log.Info("folder: not ours, left alone", "name", name, "type", kindOf(e.Type()))
			}
			continue
		}
		if !generationNamePattern.MatchString(name) {
			continue
		}
		// Through root: a link at the name goes, its target stays.
		if err := root.RemoveAll(name); err != nil {
			f.log.Warn("folder: remove old generation directory", "generation_dir", name, "err", err)
			continue
		}
		removed = append(removed, name)
	}
	return removed
}

// kindOf names a file type for a log line or an error.
func kindOf(typ fs.FileMode) string {
	switch {
	case typ.IsDir():
		return "directory"
	case typ&fs.ModeSymlink != 0:
		return "link"
	case typ.IsRegular():
		return "file"
	}
	return "special file"
}
