package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// The attacker's uid and gid: nobody, as a consumer that owns the folder.
const attackerID = 65534

// Environment of the attacker child process (this test binary, run as
// attackerID): the folder to watch and the root-only directory to point
// the links at.
const (
	attackerDirEnv    = "SDS_BRIDGE_TEST_ATTACK_DIR"
	attackerTargetEnv = "SDS_BRIDGE_TEST_ATTACK_TARGET"
)

// generationName matches the bridge's generation directories.
var generationName = regexp.MustCompile(`^\.\.\d{4}_\d\d_\d\d_\d\d_\d\d_\d\d\.\d{9}-g\d+(-\d+)?$`)

// TestAFolderOwnerCannotLeadTheRootBridgeOutOfTheFolder runs the real
// binary as root against a folder owned by another uid (mode 0755), as in
// the PostgreSQL pod, while a process running as that uid watches the
// folder with inotify and replaces every new generation directory with a
// link to a root-only directory. The bridge rotates every second; the
// root-only directory keeps its owner, mode, listing and content.
func TestAFolderOwnerCannotLeadTheRootBridgeOutOfTheFolder(t *testing.T) {
	t.Parallel() // a bridge process of its own: its own folders, sockets and signals
	if os.Getuid() != 0 {
		t.Skip("needs root: the bridge runs as root and the attacker as uid 65534")
	}
	bin := buildBridge(t)
	// Not t.TempDir: its parents are 0700, and the attacker must reach
	// the folder.
	base, err := os.MkdirTemp("", "sdsroot")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(base, "creds")
	secret := filepath.Join(base, "secret")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, attackerID, attackerID); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(secret, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(secret, "shadow"), []byte("root:$6$hash\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	before := testkit.SnapshotTree(t, secret)

	attacker := testkit.SelfAs(t, attackerID, attackerID, attackerDirEnv+"="+dir, attackerTargetEnv+"="+secret)
	attacker.Args = append(attacker.Args, "-test.run=^TestRootAttackerHelper$", "-test.count=1")
	attackerOut, err := attacker.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var attackerErr testkit.LogBuffer
	attacker.Stderr = &attackerErr
	if err := attacker.Start(); err != nil {
		t.Fatal(err)
	}
	hits := make(chan string, 1000)
	ready := make(chan struct{})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		sc := bufio.NewScanner(attackerOut)
		for sc.Scan() {
			switch line := sc.Text(); {
			case line == "ready":
				close(ready)
			case strings.HasPrefix(line, "hit "):
				hits <- strings.TrimPrefix(line, "hit ")
			}
		}
	}()
	stopAttacker := func() {
		_ = attacker.Process.Kill()
		<-readerDone
		_ = attacker.Wait()
	}
	select {
	case <-ready:
	case <-time.After(signalTestTimeout):
		stopAttacker()
		t.Fatalf("the attacker never got ready:\n%s", &attackerErr)
	}

	var stderr testkit.LogBuffer
	bridge := exec.Command(bin, "dev", "--dir", dir, "--svid-ttl", "2s", "--admin", "",
		"--sds-socket", filepath.Join(base, "sds.sock"), "--log-level", "debug")
	bridge.Dir = base // dev keeps its Workload API socket under ./sds-bridge-dev
	bridge.Stderr = &stderr
	if err := bridge.Start(); err != nil {
		stopAttacker()
		t.Fatal(err)
	}
	// Enough rotations (one a second) for several attacked swaps.
	deadline := time.Now().Add(signalTestTimeout)
	for len(hits) < 5 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	_ = bridge.Process.Signal(syscall.SIGTERM)
	bridgeErr := bridge.Wait()
	stopAttacker()
	close(hits)
	n := 0
	for range hits {
		n++
	}
	t.Logf("the attacker replaced %d generation directories; bridge exit: %v", n, bridgeErr)
	if n == 0 {
		t.Fatalf("the attacker never replaced a generation directory: the test proves nothing\nattacker:\n%s\nbridge:\n%s", &attackerErr, &stderr)
	}
	if after := testkit.SnapshotTree(t, secret); after != before {
		t.Errorf("the root-only directory outside the folder changed:\nbefore:\n%safter:\n%s\nbridge log:\n%s", before, after, &stderr)
	}
	if refused := strings.Count(stderr.String(), "was replaced"); refused == 0 {
		t.Errorf("no swap was refused as replaced; bridge log:\n%s", &stderr)
	} else {
		t.Logf("%d swaps refused because a directory was replaced", refused)
	}
}

// TestRootAttackerHelper is the attacker process of
// TestAFolderOwnerCannotLeadTheRootBridgeOutOfTheFolder; it does nothing
// unless started by it.
func TestRootAttackerHelper(t *testing.T) {
	dir, target := os.Getenv(attackerDirEnv), os.Getenv(attackerTargetEnv)
	if dir == "" || target == "" {
		t.Skip("only the attacker child process of TestAFolderOwnerCannotLeadTheRootBridgeOutOfTheFolder")
	}
	fd, err := syscall.InotifyInit1(syscall.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := syscall.InotifyAddWatch(fd, dir, syscall.IN_CREATE|syscall.IN_ONLYDIR); err != nil {
		t.Fatal(err)
	}
	fmt.Println("ready")
	buf := make([]byte, 64*1024)
	// The parent kills this process when it is done.
	for n := 0; ; n++ {
		m, err := syscall.Read(fd, buf)
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off+syscall.SizeofInotifyEvent <= m; {
			ev := (*syscall.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := strings.TrimRight(string(buf[off+syscall.SizeofInotifyEvent:off+syscall.SizeofInotifyEvent+int(ev.Len)]), "\x00")
			off += syscall.SizeofInotifyEvent + int(ev.Len)
			if ev.Mask&syscall.IN_ISDIR == 0 || !generationName.MatchString(name) {
				continue
			}
			path := filepath.Join(dir, name)
			if err := os.Rename(path, filepath.Join(dir, fmt.Sprintf("stolen-%d", n))); err != nil {
				continue
			}
			if err := os.Symlink(target, path); err == nil {
				fmt.Println("hit", name)
			}
		}
	}
}
