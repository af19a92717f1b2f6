package main

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// signalTestTimeout bounds every wait of the signal test against hangs.
const signalTestTimeout = 30 * time.Second

// buildBridge builds the real binary: the signal must reach a process
// that runs main() with its own signal handling, and the benchmarks time
// a process start.
func buildBridge(t testing.TB) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "sds-bridge")
	out, err := exec.Command(goTool, "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// generationDirs lists the folder's generation directories and what
// ..data names.
func generationDirs(dir string) (gens []string, data string) {
	data, _ = os.Readlink(filepath.Join(dir, filesink.DataLink))
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), "..") {
			gens = append(gens, e.Name())
		}
	}
	return gens, data
}

// midSwap reports a generation directory that exists but is not (yet)
// behind ..data while the previous one still is: a swap in progress.
func midSwap(dir string) bool {
	gens, data := generationDirs(dir)
	if data == "" {
		return false
	}
	for _, g := range gens {
		if g > data { // names sort by time
			return true
		}
	}
	return false
}

// checkConsistent reads the folder as PostgreSQL would, through the stable
// names, and checks it is one whole set: key of the certificate, chain
// verified by the bundle, marker of that certificate. Validity is checked
// at the middle of the leaf's life: with 1 s SVIDs, "now" says nothing
// about consistency.
func checkConsistent(t *testing.T, dir string) *filesink.Material {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, filesink.DefaultCertFileName))
	if err != nil {
		t.Fatalf("no certificate in the folder: %v", err)
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		t.Fatalf("certificate file is not PEM: %q", raw)
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	mid := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
	m, err := filesink.Inspect(filesink.InspectConfig{Dir: dir, Now: mid})
	if err != nil {
		t.Fatalf("folder is not one consistent set: %v", err)
	}
	if m.Generation == 0 {
		t.Errorf("the marker does not describe the certificate (serial %s)", m.Serial)
	}
	return m
}

// TestSignalDuringSwaps runs `sds-bridge dev` with 1 s SVIDs (a swap every
// half second) and stops it at random moments, some while a swap is in
// progress: SIGTERM must leave a consistent folder and exit 0; SIGKILL
// (a crash) must leave either the new or the previous complete set, and
// the next start must clean up after it.
func TestSignalDuringSwaps(t *testing.T) {
	t.Parallel() // a bridge process of its own: its own folders, sockets and signals
	bin := buildBridge(t)
	work := testkit.ShortDir(t)
	dir := filepath.Join(work, "certs")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))

	const runs = 6
	midSwapHits := 0
	for i := range runs {
		sig := syscall.SIGTERM
		if i%2 == 1 {
			sig = syscall.SIGKILL
		}
		var stderr testkit.LogBuffer
		cmd := exec.Command(bin, "dev", "--svid-ttl", "1s", "--dir", dir,
			"--sds-socket", filepath.Join(work, "sds.sock"), "--admin", "", "--log-level", "debug")
		cmd.Dir = work // dev keeps its Workload API socket under ./sds-bridge-dev
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		fail := func(format string, args ...any) {
			t.Helper()
			_ = cmd.Process.Kill()
			<-exited
			t.Fatalf("run %d: "+format+"\nbridge log:\n%s", append([]any{i}, append(args, stderr.String())...)...)
		}

		// The first generation of this run is in place.
		deadline := time.Now().Add(signalTestTimeout)
		for {
			if m, err := filesink.Inspect(filesink.InspectConfig{Dir: dir}); err == nil && m.Generation >= 1 &&
				strings.Contains(stderr.String(), "swapped in new generation") {
				break
			}
			if time.Now().After(deadline) {
				fail("no generation written")
			}
			time.Sleep(5 * time.Millisecond)
		}

		// Half the runs at a random moment, half aimed at a swap in
		// progress (best effort: a swap lasts a few fsyncs).
		if i%4 < 2 {
			time.Sleep(time.Duration(rng.Int64N(int64(700 * time.Millisecond))))
		} else {
			aim := time.Now().Add(2 * time.Second)
			for !midSwap(dir) && time.Now().Before(aim) {
			}
		}
		if midSwap(dir) {
			midSwapHits++
		}
		if err := cmd.Process.Signal(sig); err != nil {
			fail("signal: %v", err)
		}
		select {
		case err := <-exited:
			var exit *exec.ExitError
			switch {
			case sig == syscall.SIGTERM && err != nil:
				t.Fatalf("run %d: exit after SIGTERM: %v\nbridge log:\n%s", i, err, &stderr)
			case sig == syscall.SIGKILL && !errors.As(err, &exit):
				t.Fatalf("run %d: exit after SIGKILL: %v", i, err)
			}
		case <-time.After(signalTestTimeout):
			fail("still running %s after %s", signalTestTimeout, sig)
		}
		if sig == syscall.SIGTERM && !strings.Contains(stderr.String(), `msg="stopped`) {
			t.Errorf("run %d: no orderly stop logged:\n%s", i, &stderr)
		}
		m := checkConsistent(t, dir)
		t.Logf("run %d: %s; folder holds generation %d (serial %s)", i, sig, m.Generation, m.Serial)
	}
	t.Logf("%d of %d signals arrived while a swap was in progress", midSwapHits, runs)

	// After the crashes, a last start cleans up: one generation (plus the
	// one before, kept for readers), no temporary links.
	cmd := exec.Command(bin, "dev", "--svid-ttl", "1s", "--dir", dir,
		"--sds-socket", filepath.Join(work, "sds.sock"), "--admin", "")
	cmd.Dir = work
	var stderr testkit.LogBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(signalTestTimeout)
	for !strings.Contains(stderr.String(), "swapped in new generation") && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("last run: %v\n%s", err, &stderr)
	}
	checkConsistent(t, dir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	gens := 0
	for _, e := range entries {
		switch name := e.Name(); {
		case e.IsDir() && strings.HasPrefix(name, ".."):
			gens++
		case strings.HasPrefix(name, "..") && name != filesink.DataLink && name != filesink.LockFileName:
			t.Errorf("leftover %s after a clean run", name)
		}
	}
	if gens < 1 || gens > 2 {
		t.Errorf("%d generation directories after a clean run, want 1 or 2", gens)
	}
}
