package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// Environment of the attacker child processes below (this test binary,
// run as attackerID).
const (
	// parentAttackFolderEnv and parentAttackTargetEnv: the folder to rename
	// away and the directory to link in its place.
	parentAttackFolderEnv = "SDS_BRIDGE_TEST_PARENT_ATTACK_FOLDER"
	parentAttackTargetEnv = "SDS_BRIDGE_TEST_PARENT_ATTACK_TARGET"
	// plantLocksEnv: the lock files to plant and hold, separated by ':'.
	plantLocksEnv = "SDS_BRIDGE_TEST_PLANT_LOCKS"
)

// reachableDir is a new directory every user may enter (t.TempDir's
// parents are 0700), removed after the test; sockets fit in it.
func reachableDir(t *testing.T) string {
	t.Helper()
	base := testkit.ShortDir(t)
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	return base
}

// mkdirAs makes dir (mode 0755) belonging to uid:gid.
func mkdirAs(t *testing.T, dir string, uid, gid int) {
	t.Helper()
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
}

// TestAParentOwnerCannotLeadTheRootBridgeToAnotherDirectory runs the real
// binary as root on the folder p/spiffe, where p belongs to uid 65534 (as
// /var/lib/postgresql belongs to postgres). While it rotates every second,
// a process of that uid does `mv spiffe spiffe.old; ln -s /victim spiffe`
// (issue 19, fault 3: /victim received ..data, links and generations).
// Nothing outside the folder changes; the bridge warned about p at start,
// and says on every swap, in its log and /readyz, that the folder is no
// longer the directory it locked.
func TestAParentOwnerCannotLeadTheRootBridgeToAnotherDirectory(t *testing.T) {
	t.Parallel()
	if os.Getuid() != 0 {
		t.Skip("needs root: the bridge runs as root and the attacker as uid 65534")
	}
	bin := buildBridge(t)
	base := reachableDir(t)
	parent := filepath.Join(base, "p")
	mkdirAs(t, parent, attackerID, attackerID)
	dir := filepath.Join(parent, "spiffe")
	victim := filepath.Join(base, "victim")
	if err := os.Mkdir(victim, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(victim, "shadow"), []byte("root:$6$hash\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	before := testkit.SnapshotTree(t, victim)
	b := startBridgeProc(t, bin, base, "dev", "--dir", dir, "--svid-ttl", "2s", "--admin", "127.0.0.1:0",
		"--sds-socket", filepath.Join(base, "sds.sock"))
	testkit.Eventually(t, "the folder's first generation", func() bool { return diskGeneration(dir) >= 1 })

	attacker := testkit.SelfAs(t, attackerID, attackerID, parentAttackFolderEnv+"="+dir, parentAttackTargetEnv+"="+victim)
	attacker.Args = append(attacker.Args, "-test.run=^TestParentAttackerHelper$", "-test.count=1", "-test.v")
	if out, err := attacker.CombinedOutput(); err != nil || !strings.Contains(string(out), "moved") {
		t.Fatalf("the attacker did not move the folder (%v):\n%s", err, out)
	}
	const refused = "is no longer the directory the bridge locked at start (it is now a link to " + "%s)"
	testkit.Eventually(t, "three swaps refused", func() bool {
		return strings.Count(b.stderr.String(), fmt.Sprintf(refused, victim)) >= 3
	})
	if after := testkit.SnapshotTree(t, victim); after != before {
		t.Errorf("the directory the attacker linked in changed:\nbefore:\n%safter:\n%s", before, after)
	}
	if !strings.Contains(b.stderr.String(), "can be written by its owner, uid 65534") {
		t.Errorf("no start-up warning about %s, which uid 65534 owns", parent)
	}
	m := adminAddr.FindStringSubmatch(b.stderr.String())
	if m == nil {
		t.Fatal("no admin listening line")
	}
	code, body := testkit.Get(t, "http://"+m[1]+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "no longer the directory the bridge locked") {
		t.Errorf("/readyz = %d, want 503 saying the folder was replaced:\n%s", code, body)
	}
}

// TestParentAttackerHelper is the attacker of
// TestAParentOwnerCannotLeadTheRootBridgeToAnotherDirectory: it renames
// the folder away and links the target in its place, as uid 65534.
func TestParentAttackerHelper(t *testing.T) {
	dir, target := os.Getenv(parentAttackFolderEnv), os.Getenv(parentAttackTargetEnv)
	if dir == "" || target == "" {
		t.Skip("only the attacker child process of TestAParentOwnerCannotLeadTheRootBridgeToAnotherDirectory")
	}
	if err := os.Rename(dir, dir+".old"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, dir); err != nil {
		t.Fatal(err)
	}
	fmt.Println("moved")
}

// TestAFullFolderVolumeAtStartStillServesSDSAndTheFolderCatchesUp starts
// the real binary with its folder on a full tmpfs (issue 19, fault 11: it
// exited at once, "lock …: no space left on device", and Envoy got
// nothing). SDS serves at once; the folder's swap fails and is retried,
// and once space is freed the folder holds the bridge's first and only
// generation (the SVIDs live 10 minutes: no rotation helps).
func TestAFullFolderVolumeAtStartStillServesSDSAndTheFolderCatchesUp(t *testing.T) {
	t.Parallel()
	if os.Getuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	bin := buildBridge(t)
	base := reachableDir(t)
	disk := filepath.Join(base, "disk")
	if err := os.Mkdir(disk, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", disk, "tmpfs", 0, "size=256k"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	// Registered first, so it runs after the bridge has stopped.
	t.Cleanup(func() { _ = syscall.Unmount(disk, syscall.MNT_DETACH) })
	certs := filepath.Join(disk, "certs")
	if err := os.Mkdir(certs, 0o755); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(disk, "filler")
	fillUntilFull(t, filler)

	sock := filepath.Join(base, "sds.sock")
	started := time.Now()
	b := startBridgeProc(t, bin, base, "dev", "--dir", certs, "--svid-ttl", "10m", "--admin", "", "--sds-socket", sock)
	// The client dials once the socket is there: gRPC's reconnect backoff
	// (1 s and more) would otherwise be what is measured.
	testkit.Eventually(t, "the SDS socket", func() bool {
		b.requireRunning(t)
		fi, err := os.Stat(sock)
		return err == nil && fi.Mode()&os.ModeSocket != 0
	})
	client := sdsClient(t, sock)
	testkit.Eventually(t, "SDS answering with the default secret", func() bool {
		b.requireRunning(t)
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		resp, err := client.FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{TypeUrl: resource.SecretType, ResourceNames: []string{"default"}})
		return err == nil && len(resp.GetResources()) == 1
	})
	t.Logf("SDS served the default secret %s after the start, with the folder's disk full", time.Since(started).Round(time.Millisecond))
	testkit.Eventually(t, "a swap failing for want of space", func() bool {
		return strings.Contains(b.stderr.String(), "no space left on device")
	})
	if g := diskGeneration(certs); g != 0 {
		t.Fatalf("generation %d on a full disk", g)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	testkit.Eventually(t, "the folder's generation once space is free", func() bool { return diskGeneration(certs) >= 1 })
	t.Logf("space freed → folder current (generation %d) in %s", diskGeneration(certs), time.Since(freed).Round(time.Millisecond))
	if g := diskGeneration(certs); g != 1 {
		t.Errorf("the folder holds generation %d, want 1: a rotation came and the test proves nothing", g)
	}
}

// requireRunning fails the test if the bridge has exited, leaving its
// exit status for startBridgeProc's clean-up.
func (p *bridgeProc) requireRunning(t *testing.T) {
	t.Helper()
	select {
	case err := <-p.exited:
		p.exited <- err
		t.Fatalf("the bridge exited: %v\n%s", err, p.stderr)
	default:
	}
}

// fillUntilFull writes path until its file system has no block left.
func fillUntilFull(t *testing.T, path string) {
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

// TestPlantedLockFilesDoNotKeepTheRootBridgeFromStarting: uid 65534 owns
// the folder and the SDS socket's directory, creates ..sds-bridge.lock and
// sds.sock.lock before the bridge starts, writes pid 1 into each and holds
// their flocks (issue 19, fault 12: the bridge refused to start, "held by
// another sds-bridge (pid 1)"). The real binary starts as root, serves SDS
// and writes the folder, and logs each lock file it replaced.
func TestPlantedLockFilesDoNotKeepTheRootBridgeFromStarting(t *testing.T) {
	t.Parallel()
	if os.Getuid() != 0 {
		t.Skip("needs root: the bridge runs as root and the planter as uid 65534")
	}
	bin := buildBridge(t)
	base := reachableDir(t)
	dir, sockDir := filepath.Join(base, "creds"), filepath.Join(base, "run")
	mkdirAs(t, dir, attackerID, attackerID)
	mkdirAs(t, sockDir, attackerID, attackerID)
	sock := filepath.Join(sockDir, "sds.sock")
	locks := []string{filepath.Join(dir, "..sds-bridge.lock"), sock + ".lock"}

	planter := testkit.SelfAs(t, attackerID, attackerID, plantLocksEnv+"="+strings.Join(locks, ":"))
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
	line := make([]byte, len("holding\n"))
	if _, err := out.Read(line); err != nil || string(line) != "holding\n" {
		t.Fatalf("the planter did not get to hold its locks (%q, %v):\n%s", line, err, &planterErr)
	}

	b := startBridgeProc(t, bin, base, "dev", "--dir", dir, "--svid-ttl", "10m", "--admin", "", "--sds-socket", sock)
	client := sdsClient(t, sock)
	testkit.Eventually(t, "SDS serving and the folder written", func() bool {
		b.requireRunning(t)
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		resp, err := client.FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{TypeUrl: resource.SecretType, ResourceNames: []string{"default"}})
		return err == nil && len(resp.GetResources()) == 1 && diskGeneration(dir) == 1
	})
	for _, l := range locks {
		if !strings.Contains(b.stderr.String(), "lock="+l+" was=\"a file owned by uid 65534") {
			t.Errorf("the log does not say that the planted %s was replaced", l)
		}
		fi, err := os.Lstat(l)
		if err != nil || fi.Sys().(*syscall.Stat_t).Uid != 0 || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s after the start: %v (%v), want root's 0600 lock file", l, fi, err)
		}
	}
}

// TestLockPlanterHelper is the planter of
// TestPlantedLockFilesDoNotKeepTheRootBridgeFromStarting: as uid 65534 it
// creates each lock file, writes pid 1 into it, holds its flock and says
// "holding"; the parent kills it.
func TestLockPlanterHelper(t *testing.T) {
	paths := os.Getenv(plantLocksEnv)
	if paths == "" {
		t.Skip("only the planter child process of TestPlantedLockFilesDoNotKeepTheRootBridgeFromStarting")
	}
	for _, p := range strings.Split(paths, ":") {
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString("1\n"); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
			t.Fatal(err)
		}
	}
	os.Stdout.WriteString("holding\n")
	select {}
}
