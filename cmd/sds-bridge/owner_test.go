package main

import (
	"errors"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// bridgeProc is the real binary running as a process until the test ends.
type bridgeProc struct {
	cmd    *exec.Cmd
	stderr *testkit.LogBuffer
	exited chan error
}

// startBridgeProc starts bin with args in the working directory work (dev
// keeps its Workload API socket under ./sds-bridge-dev) and stops it with
// SIGTERM when the test ends.
func startBridgeProc(t *testing.T, bin, work string, args ...string) *bridgeProc {
	t.Helper()
	p := &bridgeProc{cmd: exec.Command(bin, args...), stderr: &testkit.LogBuffer{}, exited: make(chan error, 1)}
	p.cmd.Dir = work
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(testkit.Timeout):
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("bridge %d stderr:\n%s", p.cmd.Process.Pid, p.stderr)
		}
	})
	return p
}

// folderState is what a reader of a credential folder could tell apart:
// every entry's name, type and inode, what ..data names, and the bytes of
// every file in the current generation.
func folderState(t *testing.T, dir string) map[string]string {
	t.Helper()
	state := map[string]string{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		fi, err := os.Lstat(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		state["entry "+e.Name()] = fi.Mode().Type().String() + " inode " + strconv.FormatUint(st.Ino, 10)
	}
	data, err := os.Readlink(filepath.Join(dir, filesink.DataLink))
	if err != nil {
		t.Fatal(err)
	}
	state["..data"] = data
	files, err := os.ReadDir(filepath.Join(dir, data))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		path := filepath.Join(dir, data, f.Name())
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		state["file "+f.Name()] = strconv.FormatUint(fi.Sys().(*syscall.Stat_t).Ino, 10) + " " + string(raw)
	}
	return state
}

// TestASecondBridgeOnTheSameFolderOrSocketExitsAndTouchesNothing: a folder
// and a socket belong to one running bridge. A second bridge on the same
// folder with another socket and SPIFFE ID, on the same socket with another
// folder, or as `run` on the same folder, exits non-zero at once naming the
// running bridge's pid, and the first bridge's folder (..data, every file's
// bytes and inode) and socket are as they were.
func TestASecondBridgeOnTheSameFolderOrSocketExitsAndTouchesNothing(t *testing.T) {
	t.Parallel() // a bridge process of its own: its own folders, sockets and signals
	bin := buildBridge(t)
	work := testkit.ShortDir(t)
	dir := filepath.Join(work, "certs")
	socket := filepath.Join(work, "sds.sock")
	// A long TTL: the first bridge does not rotate while the test looks.
	first := startBridgeProc(t, bin, work, "dev", "--svid-ttl", "1h", "--dir", dir, "--sds-socket", socket, "--admin", "")
	testkit.Eventually(t, "the first bridge's set in the folder", func() bool {
		m, err := filesink.Inspect(filesink.InspectConfig{Dir: dir})
		return err == nil && m.Generation >= 1 && strings.Contains(first.stderr.String(), "Envoy SDS: listening")
	})
	before := folderState(t, dir)
	socketBefore, err := os.Lstat(socket)
	if err != nil {
		t.Fatal(err)
	}
	holder := "pid " + strconv.Itoa(first.cmd.Process.Pid)

	tests := []struct {
		name string
		args []string
		// untouched is a folder of the second bridge that must not even
		// be created.
		untouched string
	}{
		{
			name: "same folder, another socket and SPIFFE ID",
			args: []string{"dev", "--svid-ttl", "2h", "--spiffe-id", "spiffe://example.org/other",
				"--dir", dir, "--sds-socket", filepath.Join(work, "other.sock"), "--admin", ""},
		},
		{
			name:      "same socket, another folder",
			args:      []string{"dev", "--dir", filepath.Join(work, "other-certs"), "--sds-socket", socket, "--admin", ""},
			untouched: filepath.Join(work, "other-certs"),
		},
		{
			name: "run on the same folder, no SDS",
			args: []string{"run", "--workload-api", "unix://" + filepath.Join(work, "no-agent.sock"), "--dir", dir,
				"--config", writeNoSDSConfig(t, work), "--admin", ""},
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Its own working directory: its own dev Workload API socket.
			own := filepath.Join(work, "second"+strconv.Itoa(i))
			if err := os.Mkdir(own, 0o755); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			second := startBridgeProc(t, bin, own, tt.args...)
			var exitErr error
			select {
			case exitErr = <-second.exited:
				second.exited <- exitErr // for the cleanup
			case <-time.After(testkit.Timeout):
				t.Fatalf("the second bridge still runs after %s\nstderr:\n%s", testkit.Timeout, second.stderr)
			}
			t.Logf("second bridge exited after %s: %v", time.Since(start).Round(time.Millisecond), exitErr)
			var exit *exec.ExitError
			if !errors.As(exitErr, &exit) || exit.ExitCode() == 0 {
				t.Errorf("second bridge: %v, want a non-zero exit", exitErr)
			}
			if msg := second.stderr.String(); !strings.Contains(msg, holder) || !strings.Contains(msg, "held by another sds-bridge") {
				t.Errorf("second bridge's error does not name the holder (%s):\n%s", holder, msg)
			}
			if after := folderState(t, dir); !maps.Equal(before, after) {
				t.Errorf("the first bridge's folder changed:\nbefore: %v\nafter:  %v", keysOf(before), keysOf(after))
				for k, v := range before {
					if after[k] != v {
						t.Errorf("%s changed", k)
					}
				}
			}
			if cur, err := os.Lstat(socket); err != nil || !os.SameFile(socketBefore, cur) {
				t.Errorf("the first bridge's socket was replaced or removed: %v", err)
			}
			if tt.untouched != "" {
				if _, err := os.Lstat(tt.untouched); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s was created by a bridge that was refused: %v", tt.untouched, err)
				}
			}
		})
	}
	select {
	case err := <-first.exited:
		t.Fatalf("the first bridge exited: %v", err)
	default:
	}
}

// writeNoSDSConfig is a config that turns SDS off, so that only the
// folder's lock is under test.
func writeNoSDSConfig(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "no-sds.yaml")
	if err := os.WriteFile(path, []byte("sds:\n  enabled: false\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func keysOf(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }
