package filesink

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sds-bridge/sds-bridge/internal/devapi"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// TestAFolderRenamedAwayUnderItsParentIsNeverFollowed: whoever owns the
// folder's parent (as postgres owns /var/lib/postgresql) renames the
// locked folder away and puts a link to a root-only directory in its
// place (issue 19, fault 3: that directory received ..data, links and
// generations). Every later swap is refused, loudly and without a write
// anywhere: the victim directory and the renamed folder stay as they
// were, the error names what happened, and it counts as a failed write.
// Once the folder is back, swaps resume.
func TestAFolderRenamedAwayUnderItsParentIsNeverFollowed(t *testing.T) {
	t.Parallel()
	c := newCA(t, "example.org")
	parent := t.TempDir()
	dir := filepath.Join(parent, "spiffe")
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.Mkdir(victim, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(victim, "shadow"), []byte("root:$6$hash\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	lock, err := LockFolder(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Release()
	f, _ := newFolder(t, Config{Dir: dir, Lock: lock})
	if err := f.Prepare(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := f.Apply(t.Context(), update(1, c.issue(t, devapi.SVIDOptions{}), c.Bundle())); err != nil {
		t.Fatal(err)
	}

	moved := filepath.Join(parent, "spiffe.old")
	if err := os.Rename(dir, moved); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, dir); err != nil {
		t.Fatal(err)
	}
	victimBefore, movedBefore := testkit.SnapshotTree(t, victim), testkit.SnapshotTree(t, moved)
	for gen := uint64(2); gen <= 3; gen++ {
		err := f.Apply(t.Context(), update(gen, c.issue(t, devapi.SVIDOptions{}), c.Bundle()))
		if !errors.Is(err, ErrFolderReplaced) || !strings.Contains(err.Error(), "now a link to "+victim) {
			t.Fatalf("Apply of generation %d with the folder replaced by a link = %v, want ErrFolderReplaced naming the link", gen, err)
		}
	}
	if err := f.Prepare(t.Context()); !errors.Is(err, ErrFolderReplaced) {
		t.Errorf("Prepare with the folder replaced = %v, want ErrFolderReplaced", err)
	}
	if after := testkit.SnapshotTree(t, victim); after != victimBefore {
		t.Errorf("the directory the link points at changed:\nbefore:\n%safter:\n%s", victimBefore, after)
	}
	if after := testkit.SnapshotTree(t, moved); after != movedBefore {
		t.Errorf("the renamed folder was written although its path names something else:\nbefore:\n%safter:\n%s", movedBefore, after)
	}
	if st := f.Stats(); st.WriteFailures != 2 || !errors.Is(st.LastWriteErr, ErrFolderReplaced) {
		t.Errorf("Stats = %d failures, last %v; want 2, ErrFolderReplaced", st.WriteFailures, st.LastWriteErr)
	}

	// The parent's owner puts the folder back: swaps resume there.
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(moved, dir); err != nil {
		t.Fatal(err)
	}
	if err := f.Apply(t.Context(), update(4, c.issue(t, devapi.SVIDOptions{}), c.Bundle())); err != nil {
		t.Fatalf("Apply once the folder is back: %v", err)
	}
	if m, err := Inspect(f.InspectConfig(0)); err != nil || m.Generation != 4 {
		t.Errorf("the folder holds %+v (%v), want generation 4", m, err)
	}
}

// TestAFolderReplacedByAnotherDirectoryIsRefusedToo: a plain directory
// (the parent owner's own, with a planted ..data) at the folder's path is
// not the folder either; a folder never locked is held from its first
// Prepare on.
func TestAFolderReplacedByAnotherDirectoryIsRefusedToo(t *testing.T) {
	t.Parallel()
	c := newCA(t, "example.org")
	f, _ := newFolder(t, Config{})
	if err := f.Prepare(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(f.Dir(), f.Dir()+".old"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(f.Dir(), 0o755); err != nil {
		t.Fatal(err)
	}
	err := f.Apply(t.Context(), update(1, c.issue(t, devapi.SVIDOptions{}), c.Bundle()))
	if !errors.Is(err, ErrFolderReplaced) || !strings.Contains(err.Error(), "another directory is there now") {
		t.Fatalf("Apply = %v, want ErrFolderReplaced naming another directory", err)
	}
	if got := listDir(t, f.Dir()); len(got) != 0 {
		t.Errorf("the directory now at the path was written: %v", got)
	}
}

// TestAParentWritableByAnotherUIDIsWarnedAboutAtStart: Prepare names each
// directory above the folder that a uid other than root and the bridge's
// can write (its owner, its group, every user without the sticky bit),
// once; the trusted ones are not named.
func TestAParentWritableByAnotherUIDIsWarnedAboutAtStart(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the parent to another uid")
	}
	base := t.TempDir()
	owned := filepath.Join(base, "owned")
	grouped := filepath.Join(owned, "grouped")
	dir := filepath.Join(grouped, "spiffe")
	if err := os.MkdirAll(grouped, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(owned, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(grouped, 0o775); err != nil {
		t.Fatal(err)
	}
	f, logs := newFolder(t, Config{Dir: dir})
	for range 2 {
		if err := f.Prepare(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	out := logs.String()
	for _, want := range []string{"parent=" + owned + " ", "its owner, uid 65534", "parent=" + grouped + " ", "group 0"} {
		if strings.Count(out, want) != 1 {
			t.Errorf("the log names %q %d times, want once:\n%s", want, strings.Count(out, want), out)
		}
	}
	if strings.Contains(out, "parent="+base+" ") {
		t.Errorf("the log warns about %s, which only root can write:\n%s", base, out)
	}
}

// TestAFolderOnAFullDiskAtStartIsLockedPreparedAndCatchesUpOnceFreed: on a
// file system with no block left (issue 19, fault 11: taking the lock
// failed with "no space left on device" and the bridge exited), the folder
// is locked and prepared; its swap fails and counts, and the next Apply
// after freeing space puts the set in place.
func TestAFolderOnAFullDiskAtStartIsLockedPreparedAndCatchesUpOnceFreed(t *testing.T) {
	t.Parallel()
	disk := mountTmpfs(t, "size=128k")
	c := newCA(t, "example.org")
	filler := filepath.Join(disk, "filler")
	fillDisk(t, filler)
	dir := filepath.Join(disk, "certs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := LockFolder(dir)
	if err != nil {
		t.Fatalf("LockFolder on a full disk: %v", err)
	}
	defer lock.Release()
	f, _ := newFolder(t, Config{Dir: dir, Lock: lock})
	if err := f.Prepare(t.Context()); err != nil {
		t.Fatalf("Prepare on a full disk: %v", err)
	}
	u := update(1, c.issue(t, devapi.SVIDOptions{}), c.Bundle())
	if err := f.Apply(t.Context(), u); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Apply on a full disk = %v, want ENOSPC", err)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := f.Apply(t.Context(), u); err != nil {
		t.Fatalf("Apply once space is free: %v", err)
	}
	if m, err := Inspect(f.InspectConfig(0)); err != nil || m.Generation != 1 {
		t.Errorf("the folder holds %+v (%v), want generation 1", m, err)
	}
}

// TestAStartUpCleanUpTheDiskRefusesIsRetriedBeforeTheFirstSwap: an
// expired leftover on a read-only file system cannot be removed at start.
// Prepare says so with ErrNotPrepared (the bridge starts all the same);
// Applies fail while the disk stays read-only, and the first one after it
// is writable again removes the leftover and swaps the set in.
func TestAStartUpCleanUpTheDiskRefusesIsRetriedBeforeTheFirstSwap(t *testing.T) {
	t.Parallel()
	disk := mountTmpfs(t, "size=1m")
	c := newCA(t, "example.org")
	dir := filepath.Join(disk, "certs")
	now := time.Now()
	old := c.issue(t, devapi.SVIDOptions{NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-24 * time.Hour)})
	writePlain(t, dir, map[string][]byte{
		DefaultCertFileName: certPEM(old.Certificates...),
		DefaultKeyFileName:  keyPEM(t, old),
		"leftover.txt":      []byte("not ours"),
	})
	f, logs := newFolder(t, Config{Dir: dir})
	remount(t, disk, syscall.MS_RDONLY)
	if err := f.Prepare(t.Context()); !errors.Is(err, ErrNotPrepared) || !errors.Is(err, syscall.EROFS) {
		t.Fatalf("Prepare on a read-only disk = %v, want ErrNotPrepared and EROFS", err)
	}
	u := update(1, c.issue(t, devapi.SVIDOptions{}), c.Bundle())
	if err := f.Apply(t.Context(), u); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("Apply on a read-only disk = %v, want EROFS", err)
	}
	remount(t, disk, 0)
	if err := f.Apply(t.Context(), u); err != nil {
		t.Fatalf("Apply once the disk is writable: %v", err)
	}
	if !strings.Contains(logs.String(), "removed stale file") {
		t.Errorf("the expired leftover was not removed by the clean-up:\n%s", logs)
	}
	if m, err := Inspect(f.InspectConfig(0)); err != nil || m.Generation != 1 {
		t.Errorf("the folder holds %+v (%v), want generation 1", m, err)
	}
}

// mountTmpfs mounts a tmpfs with opts on a new directory for the test.
func mountTmpfs(t *testing.T, opts string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, opts); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// remount makes the tmpfs at dir read-only (syscall.MS_RDONLY) or
// writable (0).
func remount(t *testing.T, dir string, flags uintptr) {
	t.Helper()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_REMOUNT|flags, ""); err != nil {
		t.Fatal(err)
	}
}

// fillDisk writes path until its file system has no block left.
func fillDisk(t *testing.T, path string) {
	t.Helper()
	w, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := w.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return
		}
	}
}
