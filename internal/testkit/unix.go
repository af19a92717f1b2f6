//go:build unix

package testkit

import (
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// SnapshotTree lists every entry below dir (dir included) with its path,
// type, mode, owner, size, modification time and, for a regular file, the
// SHA-256 of its content: whatever a mkdir, create, chown, chmod, write or
// remove would change. Comparing two snapshots proves dir was left alone.
func SnapshotTree(tb testing.TB, dir string) string {
	tb.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(path)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		fmt.Fprintf(&b, "%s %s %d:%d size=%d mtime=%d", path, fi.Mode(), st.Uid, st.Gid, fi.Size(), fi.ModTime().UnixNano())
		if fi.Mode().IsRegular() {
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " sha256=%x", sha256.Sum256(data))
		}
		b.WriteString("\n")
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return b.String()
}

// OpenFDs counts the open descriptors of process pid (os.Getpid() for
// this one), read from /proc: Linux only.
func OpenFDs(tb testing.TB, pid int) int {
	tb.Helper()
	entries, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		tb.Fatal(err)
	}
	return len(entries)
}

// SelfAs returns an unstarted command that runs this test binary as
// uid:gid (which needs root), with env added to this process's
// environment. The binary is hard-linked (or else copied) into a 0755
// directory every user may enter, removed after the test: the go tool's
// build directory is private to its user. GORACE=atexit_sleep_ms=0 spares
// the child the second a -race binary otherwise sleeps at exit.
func SelfAs(tb testing.TB, uid, gid uint32, env ...string) *exec.Cmd {
	tb.Helper()
	self, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "sbbin")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	bin := filepath.Join(dir, filepath.Base(self))
	if err := os.Link(self, bin); err != nil {
		copyExecutable(tb, self, bin)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(append(os.Environ(), "GORACE=atexit_sleep_ms=0"), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	return cmd
}

// copyExecutable copies from to a new file to with mode 0755.
func copyExecutable(tb testing.TB, from, to string) {
	tb.Helper()
	src, err := os.Open(from)
	if err != nil {
		tb.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		tb.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		tb.Fatal(err)
	}
}
