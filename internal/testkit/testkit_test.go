//go:build unix

package testkit

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSnapshotTreeSeesEveryChange(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, []byte("a"), 0o600); err != nil {
		t.Fatal(err)
	}
	before := SnapshotTree(t, dir)
	if again := SnapshotTree(t, dir); again != before {
		t.Fatalf("two snapshots of an unchanged tree differ:\n%s\n%s", before, again)
	}
	for name, change := range map[string]func() error{
		"content": func() error { return os.WriteFile(file, []byte("b"), 0o600) },
		"mode":    func() error { return os.Chmod(file, 0o644) },
		"entry":   func() error { return os.Mkdir(filepath.Join(dir, "d"), 0o700) },
	} {
		if err := change(); err != nil {
			t.Fatal(err)
		}
		after := SnapshotTree(t, dir)
		if after == before {
			t.Errorf("a change of %s is not in the snapshot:\n%s", name, after)
		}
		before = after
	}
}

func TestHoldConnectionsHoldsWhatItOpened(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	held := HoldConnections("tcp", l.Addr().String(), 5)
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	if len(held) != 5 {
		t.Errorf("held %d connections, want 5", len(held))
	}
	l.Close()
	if held := HoldConnections("tcp", l.Addr().String(), 3); len(held) != 0 {
		t.Errorf("held %d connections to a closed port, want 0", len(held))
	}
}

const selfAsEnv = "TESTKIT_SELF_AS"

func TestSelfAsRunsThisBinaryAsAnotherUID(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch uid")
	}
	cmd := SelfAs(t, 65534, 65534, selfAsEnv+"=1")
	cmd.Args = append(cmd.Args, "-test.run=^TestSelfAsHelper$", "-test.v")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if !strings.Contains(string(out), "uid 65534 gid 65534\n") {
		t.Errorf("the child did not run as 65534:65534:\n%s", out)
	}
}

// TestSelfAsHelper is the child of TestSelfAsRunsThisBinaryAsAnotherUID.
func TestSelfAsHelper(t *testing.T) {
	if os.Getenv(selfAsEnv) == "" {
		t.Skip("only the child process of TestSelfAsRunsThisBinaryAsAnotherUID")
	}
	fmt.Printf("uid %d gid %d\n", os.Getuid(), os.Getgid())
}

func TestOpenFDsCountsADescriptor(t *testing.T) {
	if _, err := os.Stat("/proc/self/fd"); err != nil {
		t.Skip("no /proc")
	}
	base := OpenFDs(t, os.Getpid())
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := OpenFDs(t, os.Getpid()); got != base+1 {
		t.Errorf("OpenFDs = %d after opening a file, want %d", got, base+1)
	}
}
