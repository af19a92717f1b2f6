package flock

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestASecondAcquireIsRefusedNamingTheHolder: flock locks belong to an open
// file description, so a second Acquire in the same process conflicts just
// as a second process would; the error names this process's pid.
func TestASecondAcquireIsRefusedNamingTheHolder(t *testing.T) {
	dir := t.TempDir()
	first, err := Acquire(dir, "x.lock")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(dir, "x.lock")
	var held *HeldError
	if !errors.As(err, &held) {
		t.Fatalf("second Acquire: got %v, want a HeldError", err)
	}
	if held.PID != os.Getpid() {
		t.Errorf("holder pid %d, want %d", held.PID, os.Getpid())
	}
	if !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) {
		t.Errorf("error %q does not name the holder's pid", err)
	}
	if err := first.Release(); err != nil {
		t.Fatal(err)
	}
	again, err := Acquire(dir, "x.lock")
	if err != nil {
		t.Fatalf("Acquire after Release: %v", err)
	}
	again.Release()
}

// TestAPlantedLinkIsNeverFollowed: a symlink at the lock name is replaced
// by a lock file of ours, and its target keeps its content.
func TestAPlantedLinkIsNeverFollowed(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(dir, "x.lock")); err != nil {
		t.Fatal(err)
	}
	l, err := Acquire(dir, "x.lock")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	if got, _ := os.ReadFile(victim); string(got) != "precious" {
		t.Errorf("link target changed to %q", got)
	}
	requireOwnLockFile(t, filepath.Join(dir, "x.lock"))
	if !strings.Contains(l.Replaced(), "a symlink") {
		t.Errorf("Replaced() = %q, want it to name the symlink", l.Replaced())
	}
}

// TestAHardLinkIsReplacedNotTruncated: a second name for another file (a
// hard link a consumer made) is swapped out, and the file keeps its content.
func TestAHardLinkIsReplacedNotTruncated(t *testing.T) {
	dir := t.TempDir()
	other := filepath.Join(dir, "other")
	if err := os.WriteFile(other, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(other, filepath.Join(dir, "x.lock")); err != nil {
		t.Fatal(err)
	}
	l, err := Acquire(dir, "x.lock")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	if got, _ := os.ReadFile(other); string(got) != "precious" {
		t.Errorf("hard-linked file changed to %q", got)
	}
	requireOwnLockFile(t, filepath.Join(dir, "x.lock"))
}

// requireOwnLockFile fails unless path is a lock file this process made:
// a regular file of its uid, one link, mode 0600, naming its pid.
func requireOwnLockFile(t *testing.T, path string) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if !fi.Mode().IsRegular() || st.Nlink != 1 || int(st.Uid) != os.Geteuid() || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: mode %v, %d links, uid %d; want this uid's 0600 regular file", path, fi.Mode(), st.Nlink, st.Uid)
	}
	if got, _ := os.ReadFile(path); strings.TrimSpace(string(got)) != strconv.Itoa(os.Getpid()) {
		t.Errorf("%s holds %q, want this pid", path, got)
	}
}
