//go:build e2e && benchspire

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// spiffeHelperVersion is the spiffe-helper release bench-spire runs next to
// the bridge; the module proxy serves only this version here.
const spiffeHelperVersion = "v0.11.0"

// ensureSpiffeHelper returns spiffe-helper built from the Go module proxy,
// cached like SPIRE under the user's cache dir, keyed by version. It is built
// with its own go.mod and go.sum, exactly as released.
func ensureSpiffeHelper(t testing.TB) string {
	t.Helper()
	spireDir, err := spireCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(filepath.Dir(spireDir), "spiffe-helper-"+spiffeHelperVersion)
	bin := filepath.Join(dir, "spiffe-helper")
	if isExecutable(bin) {
		return bin
	}
	start := time.Now()
	out := goCommand(t, os.TempDir(), "mod", "download", "-json", "github.com/spiffe/spiffe-helper@"+spiffeHelperVersion)
	var mod struct{ Dir string }
	if err := json.Unmarshal([]byte(out), &mod); err != nil || mod.Dir == "" {
		t.Fatalf("e2e: go mod download spiffe-helper: %v\n%s", err, out)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Built next to the cache and renamed into place: a parallel run never
	// sees half a binary.
	tmp := filepath.Join(dir, fmt.Sprintf("spiffe-helper.%d", os.Getpid()))
	defer os.Remove(tmp)
	goCommand(t, mod.Dir, "build", "-trimpath", "-o", tmp, "./cmd/spiffe-helper")
	if err := os.Rename(tmp, bin); err != nil {
		t.Fatal(err)
	}
	t.Logf("built spiffe-helper %s in %s", spiffeHelperVersion, time.Since(start).Round(time.Second))
	return bin
}

// benchBridgeBinary builds ./cmd/sds-bridge of the module in srcDir with the
// benchtrace tag (SIGUSR2 toggles a runtime trace; nothing else differs)
// into outDir.
func benchBridgeBinary(t testing.TB, srcDir, outDir string) string {
	t.Helper()
	bin := filepath.Join(outDir, "sds-bridge")
	goCommand(t, srcDir, "build", "-tags", "benchtrace", "-o", bin, "./cmd/sds-bridge")
	return bin
}

// baselineBridge builds the bridge as it was at rev (git archive of this
// repository into a temp dir, removed when the test ends), with this
// checkout's benchtrace file added so both bridges are built alike. It
// returns the binary and rev's short commit hash.
func baselineBridge(t testing.TB, rev string) (bin, commit string) {
	t.Helper()
	repo := strings.TrimSpace(runGit(t, "..", "rev-parse", "--show-toplevel"))
	commit = strings.TrimSpace(runGit(t, repo, "rev-parse", "--short", rev+"^{commit}"))
	src := t.TempDir()
	tarball := filepath.Join(src, "src.tar")
	runGit(t, repo, "archive", "--format=tar", "-o", tarball, commit)
	if out, err := exec.Command("tar", "-xf", tarball, "-C", src).CombinedOutput(); err != nil {
		t.Fatalf("e2e: unpack %s: %v\n%s", commit, err, out)
	}
	traceFile := filepath.Join(src, "cmd", "sds-bridge", "benchtrace.go")
	if _, err := os.Stat(traceFile); err != nil {
		data, err := os.ReadFile(filepath.Join(repo, "cmd", "sds-bridge", "benchtrace.go"))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, traceFile, data, 0o644, nil)
	}
	outDir := newWorkDir(t) // traversable, like the suite's own bin dir
	start := time.Now()
	bin = benchBridgeBinary(t, src, outDir)
	t.Logf("built the baseline bridge at %s in %s", commit, time.Since(start).Round(time.Second))
	return bin, commit
}

// goCommand runs the go command in dir, outside any go.work of the caller,
// and returns its standard output.
func goCommand(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(goTool(), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-buildvcs=false")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("e2e: go %s (in %s): %v\n%s", strings.Join(args, " "), dir, err, stderr.String())
	}
	return string(out)
}

func runGit(t testing.TB, dir string, args ...string) string {
	t.Helper()
	out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("e2e: git %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return string(out)
}
