package filesink

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"unsafe"

	"github.com/sds-bridge/sds-bridge/internal/devapi"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// attackTarget is what an attacker who can write the folder points a link
// at: a root-only directory and a file outside the folder. snapshot records
// everything the bridge could change there.
type attackTarget struct {
	dir    string // holds everything below
	secret string // a root-only directory (0700) with a root-only file
	file   string // a plain file
}

func newAttackTarget(t *testing.T) attackTarget {
	t.Helper()
	a := attackTarget{dir: t.TempDir()}
	a.secret = filepath.Join(a.dir, "secret")
	a.file = filepath.Join(a.dir, "passwd")
	if err := os.Mkdir(a.secret, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(a.secret, "shadow"), []byte("root:$6$hash\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(a.file, []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return a
}

// snapshot lists every entry below a.dir with its type, mode, owner, size,
// modification time and content hash: whatever a mkdir, create, chown,
// chmod, write or remove through a planted link would change.
func (a attackTarget) snapshot(t *testing.T) string {
	t.Helper()
	return testkit.SnapshotTree(t, a.dir)
}

// stealAndLink does what an attacker that can write the parent of path
// does in the window between two steps of a swap: it renames the entry
// the bridge just made away and puts a link to target in its place.
func stealAndLink(path, stolen, target string) error {
	if err := os.Rename(path, stolen); err != nil {
		return err
	}
	return os.Symlink(target, path)
}

// TestAGenerationDirectoryReplacedByALinkLeadsNothingOutTheFolder drives
// the symlink race deterministically: right after the bridge creates a
// directory of a new generation, a hook (playing a uid that can write the
// folder, or the owner of the generation) renames it away and puts a link
// to a directory or file outside in its place. Nothing outside the folder
// is then created, chowned, chmodded, written or removed; the folder keeps
// a usable set, and the next swap without the attacker works.
func TestAGenerationDirectoryReplacedByALinkLeadsNothingOutTheFolder(t *testing.T) {
	t.Parallel()
	c := newCA(t, "example.org")
	fed := newCA(t, "partner.net")
	tests := []struct {
		name string
		// sub is "" to attack the generation directory itself, else the
		// name of a directory inside it.
		sub string
		// target returns the link target, given the attack target and the
		// folder.
		target func(a attackTarget, dir string) string
	}{
		{name: "generation to a root-only directory", target: func(a attackTarget, _ string) string { return a.secret }},
		{name: "generation to a file", target: func(a attackTarget, _ string) string { return a.file }},
		{name: "generation relative out of the folder", target: func(a attackTarget, dir string) string {
			rel, err := filepath.Rel(dir, a.secret)
			if err != nil {
				panic(err)
			}
			return rel
		}},
		{name: "generation to the live generation, inside the folder", target: func(attackTarget, string) string { return DataLink }},
		{name: "federated subdirectory to a root-only directory", sub: FederatedDirName, target: func(a attackTarget, _ string) string { return a.secret }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a := newAttackTarget(t)
			f, _ := newFolder(t, Config{Owner: &Owner{UID: 65534, GID: 65534}, IncludeFederatedDomains: true})
			if err := f.Prepare(t.Context()); err != nil {
				t.Fatal(err)
			}
			if err := f.Apply(t.Context(), update(1, c.issue(t, devapi.SVIDOptions{}), c.Bundle(), fed.Bundle())); err != nil {
				t.Fatal(err)
			}
			before := a.snapshot(t)
			live, err := os.Readlink(filepath.Join(f.Dir(), DataLink))
			if err != nil {
				t.Fatal(err)
			}
			liveBefore := testkit.SnapshotTree(t, filepath.Join(f.Dir(), live))

			attacked := 0
			f.hooks = &hooks{afterMkdir: func(name string) {
				gen, sub, _ := strings.Cut(name, "/")
				if sub != tt.sub || !strings.Contains(gen, "-g2") {
					return
				}
				path := filepath.Join(f.Dir(), name)
				if err := stealAndLink(path, filepath.Join(f.Dir(), "stolen"), tt.target(a, filepath.Dir(path))); err != nil {
					t.Errorf("attack on %s: %v", name, err)
					return
				}
				attacked++
			}}
			err = f.Apply(t.Context(), update(2, c.issue(t, devapi.SVIDOptions{}), c.Bundle(), fed.Bundle()))
			t.Logf("Apply under attack: %v", err)
			if attacked != 1 {
				t.Fatalf("the attack ran %d times, want once: the test proves nothing", attacked)
			}
			if after := a.snapshot(t); after != before {
				t.Errorf("outside the folder changed:\nbefore:\n%safter:\n%s", before, after)
			}
			if after := testkit.SnapshotTree(t, filepath.Join(f.Dir(), live)); after != liveBefore {
				t.Errorf("the live generation changed:\nbefore:\n%safter:\n%s", liveBefore, after)
			}
			if _, err := Inspect(InspectConfig{Dir: f.Dir()}); err != nil {
				t.Errorf("folder after the attack: %v", err)
			}

			f.hooks = nil
			if err := f.Apply(t.Context(), update(3, c.issue(t, devapi.SVIDOptions{}), c.Bundle(), fed.Bundle())); err != nil {
				t.Fatalf("Apply after the attack: %v", err)
			}
			if m, err := Inspect(InspectConfig{Dir: f.Dir()}); err != nil || m.Generation != 3 {
				t.Errorf("after the attack: %+v, %v; want generation 3", m, err)
			}
			if after := a.snapshot(t); after != before {
				t.Errorf("outside the folder changed by the next swap:\nbefore:\n%safter:\n%s", before, after)
			}
		})
	}
}

// attackedName matches the generation directories the bridge makes.
var attackedName = regexp.MustCompile(`^\.\.\d{4}_\d\d_\d\d_\d\d_\d\d_\d\d\.\d{9}-g\d+(-\d+)?$`)

// TestAnAttackerRacingEverySwapLeadsNothingOutTheFolder runs the race as
// another uid would, without a hook: a goroutine watches the folder with
// inotify and swaps every new generation directory (and every directory
// made inside one) for a link to a root-only directory outside, while the
// bridge swaps many times. Nothing outside the folder changes.
func TestAnAttackerRacingEverySwapLeadsNothingOutTheFolder(t *testing.T) {
	t.Parallel()
	c := newCA(t, "example.org")
	a := newAttackTarget(t)
	f, _ := newFolder(t, Config{Owner: &Owner{UID: 65534, GID: 65534}})
	if err := f.Prepare(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := f.Apply(t.Context(), update(1, c.issue(t, devapi.SVIDOptions{}), c.Bundle())); err != nil {
		t.Fatal(err)
	}
	before := a.snapshot(t)

	fd, err := syscall.InotifyInit1(syscall.IN_NONBLOCK | syscall.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := syscall.InotifyAddWatch(fd, f.Dir(), syscall.IN_CREATE|syscall.IN_ONLYDIR); err != nil {
		t.Fatal(err)
	}
	// Non-blocking, so the runtime poller serves Read and Close ends it.
	events := os.NewFile(uintptr(fd), "inotify")
	var (
		wg   sync.WaitGroup
		hits int
	)
	wg.Go(func() {
		buf := make([]byte, 64*1024)
		for n := 0; ; n++ {
			m, err := events.Read(buf)
			if err != nil {
				return
			}
			for off := 0; off+syscall.SizeofInotifyEvent <= m; {
				ev := (*syscall.InotifyEvent)(unsafe.Pointer(&buf[off]))
				name := strings.TrimRight(string(buf[off+syscall.SizeofInotifyEvent:off+syscall.SizeofInotifyEvent+int(ev.Len)]), "\x00")
				off += syscall.SizeofInotifyEvent + int(ev.Len)
				if ev.Mask&syscall.IN_ISDIR == 0 || !attackedName.MatchString(name) {
					continue
				}
				path := filepath.Join(f.Dir(), name)
				if stealAndLink(path, filepath.Join(f.Dir(), fmt.Sprintf("stolen-%d", n)), a.secret) == nil {
					hits++
				}
			}
		}
	})

	const swaps = 100
	failed := 0
	for gen := uint64(2); gen < 2+swaps; gen++ {
		if err := f.Apply(t.Context(), update(gen, c.issue(t, devapi.SVIDOptions{}), c.Bundle())); err != nil {
			failed++
		}
	}
	events.Close()
	wg.Wait()
	t.Logf("%d of %d swaps were attacked, %d refused", hits, swaps, failed)
	if hits == 0 {
		t.Fatal("the attacker never replaced a generation directory: the test proves nothing")
	}
	if after := a.snapshot(t); after != before {
		t.Errorf("outside the folder changed:\nbefore:\n%safter:\n%s", before, after)
	}
	// Who can write the folder can repoint its links at will, so only once
	// the attacker stops must the next swap give a usable set again.
	last := uint64(2 + swaps)
	if err := f.Apply(t.Context(), update(last, c.issue(t, devapi.SVIDOptions{}), c.Bundle())); err != nil {
		t.Fatalf("Apply after the attack: %v", err)
	}
	if m, err := Inspect(InspectConfig{Dir: f.Dir()}); err != nil || m.Generation != last {
		t.Errorf("after the attack: %+v, %v; want generation %d", m, err, last)
	}
	if after := a.snapshot(t); after != before {
		t.Errorf("outside the folder changed by the next swap:\nbefore:\n%safter:\n%s", before, after)
	}
}
