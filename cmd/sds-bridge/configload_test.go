package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// A 50 MB value in a helper.conf (import-spiffe-helper, run
// --spiffe-helper-config) or a YAML config (run --config) is refused,
// naming the file and the 1 MiB bound, by a process whose peak RSS stays
// under 64 MiB (it reached 1.6 GB on the helper.conf, issue 19 fault 12).
// The peak is /usr/bin/time's: a child's own rusage would count this test
// process, whose memory Go's vfork-style start shares until exec.
func TestAFiftyMegabyteConfigIsRefusedInLittleMemory(t *testing.T) {
	t.Parallel() // processes of its own
	bin := buildBridge(t)
	dir := testkit.ShortDir(t)
	helper := filepath.Join(dir, "helper.conf")
	yaml := filepath.Join(dir, "bridge.yaml")
	writeWithValue(t, helper, `cert_dir = "/certs"`+"\nhint = \"", "\"\n")
	writeWithValue(t, yaml, "workload_api:\n  default_svid_hint: ", "\nfiles:\n  - dir: /certs\n")
	_, noTime := os.Stat("/usr/bin/time")
	for _, args := range [][]string{
		{"import-spiffe-helper", helper},
		{"run", "--spiffe-helper-config", helper},
		{"run", "--config", yaml},
	} {
		peak := filepath.Join(dir, "peak")
		cmd := exec.Command(bin, args...)
		if noTime == nil {
			cmd = exec.Command("/usr/bin/time", append([]string{"-f", "%M", "-o", peak, bin}, args...)...)
		}
		out, err := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); err == nil || code != 1 {
			t.Errorf("%q: exit %d (%v), want 1\n%s", args, code, err, out)
		}
		if !strings.Contains(string(out), args[len(args)-1]) || !strings.Contains(string(out), "larger than 1048576 bytes") {
			t.Errorf("%q: %s; want the file and the bound named", args, out)
		}
		if noTime != nil {
			t.Logf("%q: %s (no /usr/bin/time: peak RSS not measured)", args, out)
			continue
		}
		b, _ := os.ReadFile(peak) // "Command exited with non-zero status 1\n<KiB>"
		fields := append([]string{""}, strings.Fields(string(b))...)
		kib, err := strconv.Atoi(fields[len(fields)-1])
		if err != nil || kib > 64<<10 {
			t.Errorf("%q: peak RSS %q KiB (%v), want at most 64 MiB", args, b, err)
		}
		t.Logf("%q: peak RSS %d KiB: %s", args, kib, strings.TrimSpace(string(out)))
	}
}

// writeWithValue writes path as before, a 50 MB value, then after, a MiB
// at a time: this process never holds the value.
func writeWithValue(t *testing.T, path, before, after string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mib := strings.Repeat("x", 1<<20)
	f.WriteString(before)
	for range 50 {
		f.WriteString(mib)
	}
	if _, err := f.WriteString(after); err != nil {
		t.Fatal(err)
	}
}

// SIGTERM while the config is being read stops the bridge at once, with
// status 0 and nothing started: here the config is a pipe whose writer
// never writes (as --config <(…) whose producer hangs), and the bridge is
// inside the read when the signal comes. It used to read on, deaf to the
// signal (issue 19 fault 12: 615 s of CPU over a config's errors with
// SIGTERM ignored).
func TestSIGTERMWhileTheConfigIsReadStopsTheBridge(t *testing.T) {
	t.Parallel() // a process of its own
	bin := buildBridge(t)
	dir := testkit.ShortDir(t)
	fifo := filepath.Join(dir, "bridge.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", fifo)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	// A non-blocking open for writing succeeds only once a reader (the
	// bridge, reading its config) has the pipe open; the writer then
	// holds it open and writes nothing.
	var writer *os.File
	testkit.Eventually(t, "the bridge to open its config", func() bool {
		fd, err := syscall.Open(fifo, syscall.O_WRONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
		if err != nil {
			return false
		}
		writer = os.NewFile(uintptr(fd), fifo)
		return true
	})
	defer writer.Close()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err
		if err != nil || !strings.Contains(out.String(), "stopped before the config was read") {
			t.Fatalf("the bridge exited with %v, want status 0 and a line saying why:\n%s", err, out)
		}
	case <-time.After(testkit.Timeout):
		t.Fatalf("the bridge did not exit on SIGTERM while reading its config:\n%s", out)
	}
}
