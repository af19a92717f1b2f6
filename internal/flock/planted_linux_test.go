package flock

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// The planter's uid: a consumer that can write the folder or socket
// directory, and nothing else.
const planterID = 65534

// planterDirEnv tells TestLockPlanterHelper, run as planterID, where to
// plant the lock file.
const planterDirEnv = "SDS_BRIDGE_TEST_PLANT_LOCK_DIR"

// TestALockFilePlantedAndHeldByAnotherUIDDoesNotKeepTheBridgeOut: a uid
// that can write the directory creates the lock file first, writes a pid
// of its choosing (1) into it and holds its flock, as issue 19 (fault 12)
// did to keep the bridge from starting. The bridge takes the lock all the
// same, on a file of its own uid naming its own pid; a second instance is
// still refused, naming the bridge, not the planted pid.
func TestALockFilePlantedAndHeldByAnotherUIDDoesNotKeepTheBridgeOut(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the planter runs as uid 65534")
	}
	dir := planterReachableDir(t)
	planter := testkit.SelfAs(t, planterID, planterID, planterDirEnv+"="+dir)
	planter.Args = append(planter.Args, "-test.run=^TestLockPlanterHelper$", "-test.count=1")
	out, err := planter.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var planterErr testkit.LogBuffer
	planter.Stderr = &planterErr
	if err := planter.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = planter.Process.Kill()
		_ = planter.Wait()
	}()
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "holding\n" {
		t.Fatalf("the planter did not get to hold its lock (%q):\n%s", line, &planterErr)
	}
	// The planted file really is held: without the fix this is what the
	// bridge met.
	planted := filepath.Join(dir, "x.lock")
	if fi, err := os.Lstat(planted); err != nil || fi.Sys().(*syscall.Stat_t).Uid != planterID {
		t.Fatalf("no planted lock file of uid %d: %v", planterID, err)
	}

	l, err := Acquire(dir, "x.lock")
	if err != nil {
		t.Fatalf("Acquire beside a planted, held lock file: %v", err)
	}
	defer l.Release()
	t.Logf("replaced: %s", l.Replaced())
	if !strings.Contains(l.Replaced(), "uid 65534") {
		t.Errorf("Replaced() = %q, want it to name the planter's uid", l.Replaced())
	}
	requireOwnLockFile(t, planted)
	_, err = Acquire(dir, "x.lock")
	var held *HeldError
	if !errors.As(err, &held) || held.PID != os.Getpid() {
		t.Errorf("a second Acquire = %v, want a HeldError naming pid %d", err, os.Getpid())
	}
}

// TestLockPlanterHelper is the planter process of
// TestALockFilePlantedAndHeldByAnotherUIDDoesNotKeepTheBridgeOut; it does
// nothing unless started by it.
func TestLockPlanterHelper(t *testing.T) {
	dir := os.Getenv(planterDirEnv)
	if dir == "" {
		t.Skip("only the planter child process of TestALockFilePlantedAndHeldByAnotherUIDDoesNotKeepTheBridgeOut")
	}
	f, err := os.OpenFile(filepath.Join(dir, "x.lock"), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("1\n"); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("holding\n")
	select {} // the parent kills this process when it is done
}

// planterReachableDir is a directory the planter's uid owns, under
// parents it may enter (t.TempDir's are 0700).
func planterReachableDir(t *testing.T) string {
	t.Helper()
	base, err := os.MkdirTemp("", "flockplant")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(base, "d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, planterID, planterID); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestTheLockNeedsNoFreeSpace: on a file system with no block left, the
// lock is taken (the pid cannot be written, and need not be); issue 19
// (fault 11): the bridge used to exit with "no space left on device".
func TestTheLockNeedsNoFreeSpace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	fill(t, filepath.Join(dir, "filler"))
	l, err := Acquire(dir, "x.lock")
	if err != nil {
		t.Fatalf("Acquire on a full file system: %v", err)
	}
	defer l.Release()
	_, err = Acquire(dir, "x.lock")
	var held *HeldError
	if !errors.As(err, &held) {
		t.Errorf("a second Acquire on the full file system = %v, want a HeldError", err)
	}
}

// fill writes path until the file system has no block left.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return
		}
	}
}

// TestADirectoryPlantedAtTheLockNameIsSwappedOutAndRemoved: a directory
// (with content) at the lock name is replaced by a lock file and removed
// with what it held.
func TestADirectoryPlantedAtTheLockNameIsSwappedOutAndRemoved(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "x.lock", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := Acquire(dir, "x.lock")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	requireOwnLockFile(t, filepath.Join(dir, "x.lock"))
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("the directory holds %v, want the lock file alone", entries)
	}
}

// TestTwoBridgesRacingOverAPlantedLockFileNeverBothHoldIt: two takers
// start together on another uid's lock file, 200 times; each time exactly
// one holds the lock (the exchange tells the one that lost, which gives
// the name back) and no temporary file is left behind. (Three or more
// exchanging within the same instant can chain their exchanges; see
// docs/security.md.)
func TestTwoBridgesRacingOverAPlantedLockFileNeverBothHoldIt(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to plant a file of another uid")
	}
	for range 200 {
		dir := t.TempDir()
		planted := filepath.Join(dir, "x.lock")
		if err := os.WriteFile(planted, []byte("1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(planted, planterID, planterID); err != nil {
			t.Fatal(err)
		}
		const takers = 2
		locks := make(chan *Lock, takers)
		start := make(chan struct{})
		for range takers {
			go func() {
				<-start
				l, _ := Acquire(dir, "x.lock")
				locks <- l
			}()
		}
		close(start)
		held := 0
		for range takers {
			if l := <-locks; l != nil {
				held++
				defer l.Release()
			}
		}
		if held != 1 {
			t.Fatalf("%d takers hold the lock, want exactly 1", held)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 1 {
			t.Fatalf("the directory holds %v after the race, want the lock file alone", entries)
		}
	}
}
