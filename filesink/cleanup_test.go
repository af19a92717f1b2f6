package filesink

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sds-bridge/sds-bridge/internal/devapi"
	"github.com/sds-bridge/sds-bridge/reload"
	"github.com/sds-bridge/sds-bridge/rotation"
)

// generationDirsIn lists the names in dir that the bridge's generation
// naming makes (told apart by the test's own pattern, not the code's).
func generationDirsIn(t *testing.T, dir string) []string {
	t.Helper()
	var gens []string
	for _, name := range listDir(t, dir) {
		if attackedName.MatchString(name) {
			gens = append(gens, name)
		}
	}
	return gens
}

// TestAStableNameThatCannotBeMadeIsReportedOnceAndTheSetStillReloads
// occupies a stable name with a directory, so every swap meets it after
// ..data has moved: the set is then in place. Each Apply reports it
// (an error naming the file, marked ErrStableName, an update in place
// that is not swapped again, and a write failure in Stats), the
// folder's reload actions still run for every generation (issue 19,
// fault 2: before, Apply returned before them, so PostgreSQL was never
// told, and the error made the deliverer swap the same set in again every
// few seconds), old generations do not pile up and the name is logged
// once, not on every rotation.
func TestAStableNameThatCannotBeMadeIsReportedOnceAndTheSetStillReloads(t *testing.T) {
	t.Parallel()
	c := newCA(t, "example.org")
	action := &scriptedAction{name: "reload"}
	f, logs := newFolder(t, Config{Reload: newRunner(t, reload.Config{Actions: []reload.Action{action}})})
	if err := f.Prepare(t.Context()); err != nil {
		t.Fatal(err)
	}
	occupied := plantDir(t, filepath.Join(f.Dir(), DefaultBundleFileName))

	const applies = 6
	for gen := uint64(1); gen <= applies; gen++ {
		err := f.Apply(t.Context(), update(gen, c.issue(t, devapi.SVIDOptions{}), c.Bundle()))
		if err == nil || !strings.Contains(err.Error(), DefaultBundleFileName) {
			t.Fatalf("Apply %d = %v, want an error naming %s", gen, err, DefaultBundleFileName)
		}
		if !errors.Is(err, ErrStableName) || !errors.Is(err, rotation.ErrUpdateInPlace) {
			t.Fatalf("Apply %d = %v, want it marked ErrStableName, an update in place (not swapped again)", gen, err)
		}
		waitActions(t, f)
		if m, err := Inspect(InspectConfig{Dir: f.Dir()}); err != nil || m.Generation != gen {
			t.Fatalf("after Apply %d ..data holds %+v, %v; want generation %d in place", gen, m, err, gen)
		}
	}
	if got := actionGenerations(action); !slices.Equal(got, []uint64{1, 2, 3, 4, 5, 6}) {
		t.Errorf("the reload action ran for generations %v, want every one of 1..%d", got, applies)
	}
	if gens := generationDirsIn(t, f.Dir()); len(gens) > 2 {
		t.Errorf("after %d swaps %d generation directories remain, want at most 2: %v", applies, len(gens), gens)
	}
	if n := strings.Count(logs.String(), "stable name cannot be made"); n != 1 {
		t.Errorf("the unmakeable name was logged %d times in %d swaps, want once:\n%s", n, applies, logs)
	}
	if st := f.Stats(); st.WriteFailures != applies || st.LastWriteErr == nil {
		t.Errorf("Stats = %+v, want %d write failures, the last one's error", st, applies)
	}
	if b, err := os.ReadFile(filepath.Join(occupied, "mine")); err != nil || string(b) != "an operator's" {
		t.Errorf("the directory at the stable name was changed: %q, %v", b, err)
	}
	// The other stable names follow the current generation.
	if target, err := os.Readlink(filepath.Join(f.Dir(), DefaultKeyFileName)); err != nil || target != DataLink+"/"+DefaultKeyFileName {
		t.Errorf("%s -> %q, %v; want the bridge's link", DefaultKeyFileName, target, err)
	}

	// Once the name is free again, the swap works and a later block is
	// reported again.
	if err := os.RemoveAll(occupied); err != nil {
		t.Fatal(err)
	}
	if err := f.Apply(t.Context(), update(applies+1, c.issue(t, devapi.SVIDOptions{}), c.Bundle())); err != nil {
		t.Fatalf("Apply once the name is free: %v", err)
	}
	waitActions(t, f)
	if m, err := Inspect(InspectConfig{Dir: f.Dir()}); err != nil || m.Generation != applies+1 {
		t.Errorf("Inspect = %+v, %v; want generation %d", m, err, applies+1)
	}
}

// plantDir makes a directory at path holding a file "mine", as an
// operator's, and returns path.
func plantDir(t *testing.T, path string) string {
	t.Helper()
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(path, "mine"), []byte("an operator's"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// actionGenerations are the generations a scriptedAction ran for.
func actionGenerations(a *scriptedAction) []uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	var gens []uint64
	for _, e := range a.events {
		gens = append(gens, e.Generation)
	}
	return gens
}

// TestOnlyTheBridgesOwnNamesAreRemoved puts into a folder what users and
// operators leave there — a "..keep" directory, a "..notes" file, a
// directory whose name only looks like a generation, the lock file — next
// to the bridge's own leftovers (old generations, temporary links). Start-up
// cleanup and the swaps remove only the bridge's own names; every other
// ".." entry stays and is logged once as not ours; the lock file is never
// removed or mentioned.
func TestOnlyTheBridgesOwnNamesAreRemoved(t *testing.T) {
	t.Parallel()
	c := newCA(t, "example.org")
	f, logs := newFolder(t, Config{})
	dir := f.Dir()
	theirs := map[string]bool{ // name → is a directory
		"..keep":                  true,
		"..notes":                 false,
		"..2024_backup-g1":        true, // not our pattern: no nanoseconds
		"..2001_01_01_00_00_00.0": true,
	}
	for name, isDir := range theirs {
		path := filepath.Join(dir, name)
		if isDir {
			if err := os.MkdirAll(path, 0o755); err != nil {
				t.Fatal(err)
			}
			path = filepath.Join(path, "content")
		} else if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte("theirs"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, LockFileName), []byte("4242\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ours := []string{
		"..2001_01_01_00_00_00.000000000-g7",
		"..2001_01_01_00_00_00.000000000-g7-1",
	}
	for _, name := range ours {
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name, "svid_key.pem"), []byte("old key"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{dataTmpLink, linkTmpPrefix + "svid.pem"} {
		if err := os.Symlink(ours[0], filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}

	if err := f.Prepare(t.Context()); err != nil {
		t.Fatal(err)
	}
	want := []string{"..2001_01_01_00_00_00.0", "..2024_backup-g1", "..keep", "..notes", LockFileName}
	if got := listDir(t, dir); !slices.Equal(got, want) {
		t.Errorf("after Prepare the folder holds %v, want %v", got, want)
	}
	for gen := uint64(1); gen <= 3; gen++ {
		if err := f.Apply(t.Context(), update(gen, c.issue(t, devapi.SVIDOptions{}), c.Bundle())); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Prepare(t.Context()); err != nil {
		t.Fatal(err)
	}
	for name, isDir := range theirs {
		path := filepath.Join(dir, name)
		if isDir {
			path = filepath.Join(path, "content")
		}
		if b, err := os.ReadFile(path); err != nil || string(b) != "theirs" {
			t.Errorf("%s: %q, %v; want it left alone", name, b, err)
		}
		if n := strings.Count(logs.String(), "not ours, left alone"+`" sink=files:`+dir+" name="+name+" "); n != 1 {
			t.Errorf("%s logged %d times as not ours, want once:\n%s", name, n, logs)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, LockFileName)); err != nil || string(b) != "4242\n" {
		t.Errorf("lock file: %q, %v; want it untouched", b, err)
	}
	if strings.Contains(logs.String(), LockFileName) {
		t.Errorf("the lock file is mentioned in the logs:\n%s", logs)
	}
	data, err := os.Readlink(filepath.Join(dir, DataLink))
	if gens := generationDirsIn(t, dir); err != nil || !slices.Equal(gens, []string{data}) {
		t.Errorf("after a restart the generation directories are %v, want only the one ..data names (%q, %v)", gens, data, err)
	}
}

// TestADirectoryAtDataIsRemovedAndLoggedAsADirectory: ..data is the
// bridge's name even when something made it a directory; Prepare deletes
// it recursively and says it removed a directory, not a file.
func TestADirectoryAtDataIsRemovedAndLoggedAsADirectory(t *testing.T) {
	t.Parallel()
	f, logs := newFolder(t, Config{})
	if err := os.MkdirAll(filepath.Join(f.Dir(), DataLink, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.Dir(), DataLink, "sub", "svid.pem"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := f.Prepare(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := listDir(t, f.Dir()); len(got) != 0 {
		t.Errorf("folder = %v, want empty", got)
	}
	var line string
	for l := range strings.Lines(logs.String()) {
		if strings.Contains(l, filepath.Join(f.Dir(), DataLink)) {
			line = l
		}
	}
	if !strings.Contains(line, "removed directory") || strings.Contains(line, "removed stale file") {
		t.Errorf("removal of the ..data directory logged as %q, want a removed directory", line)
	}
}
