//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
)

var (
	// spireBins are the SPIRE binaries; spireErr says why there are none.
	spireBins spireBinaries
	spireErr  error
	// bridgeBin is the sds-bridge binary built from this checkout;
	// bridgeErr says why there is none.
	bridgeBin string
	bridgeErr error
)

// TestMain builds what every test needs once: SPIRE (from the version cache,
// or from source on a cold machine) and the sds-bridge binary. A failed
// build does not stop the suite; each test that needs the missing piece
// fails with the build error, and the others still run.
func TestMain(m *testing.M) {
	toolsDir, err := filepath.Abs("tools")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(2)
	}
	spireBins, spireErr = ensureSPIRE(toolsDir)

	binDir, err := os.MkdirTemp("", "sds-bridge-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(2)
	}
	bridgeBin, bridgeErr = buildBridge(binDir)

	code := m.Run()
	_ = os.RemoveAll(binDir)
	if code == 0 {
		// Every child process, gRPC conn and Workload API source is
		// stopped by the tests' cleanups; anything left is a harness bug.
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: goroutine leak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// buildBridge builds ./cmd/sds-bridge of this checkout into dir, readable and
// executable by the other OS users the tests run it as.
func buildBridge(dir string) (string, error) {
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", fmt.Errorf("e2e: bridge bin dir: %w", err)
	}
	bin := filepath.Join(dir, "sds-bridge")
	start := time.Now()
	cmd := exec.Command(goTool(), "build", "-o", bin, "./cmd/sds-bridge")
	cmd.Dir = ".." // the module root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("e2e: go build ./cmd/sds-bridge: %w\n%s", err, out)
	}
	fmt.Fprintf(os.Stderr, "e2e: built sds-bridge in %s\n", time.Since(start).Round(100*time.Millisecond))
	return bin, nil
}

func requireSPIRE(t testing.TB) {
	t.Helper()
	requireRoot(t)
	if spireErr != nil {
		t.Fatal(spireErr)
	}
}

func requireBridge(t testing.TB) {
	t.Helper()
	if bridgeErr != nil {
		t.Fatal(bridgeErr)
	}
}
