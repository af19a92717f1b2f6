package flock

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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

// TestAPlantedLinkIsNeverFollowed: a symlink at the lock name is refused
// and its target keeps its content.
func TestAPlantedLinkIsNeverFollowed(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(dir, "x.lock")); err != nil {
		t.Fatal(err)
	}
	if _, err := Acquire(dir, "x.lock"); err == nil {
		t.Fatal("Acquire through a symlink succeeded")
	}
	if got, _ := os.ReadFile(victim); string(got) != "precious" {
		t.Errorf("link target changed to %q", got)
	}
}

// TestAHardLinkIsRefused: a second name for another file (a hard link a
// consumer made) must not be truncated.
func TestAHardLinkIsRefused(t *testing.T) {
	dir := t.TempDir()
	other := filepath.Join(dir, "other")
	if err := os.WriteFile(other, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(other, filepath.Join(dir, "x.lock")); err != nil {
		t.Fatal(err)
	}
	if _, err := Acquire(dir, "x.lock"); err == nil {
		t.Fatal("Acquire on a hard link succeeded")
	}
	if got, _ := os.ReadFile(other); string(got) != "precious" {
		t.Errorf("hard-linked file changed to %q", got)
	}
}
