//go:build e2e && benchspire

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// traceBridges traces every bridge (SIGUSR2, see cmd/sds-bridge's
// benchtrace.go) over n rotations after the window, so tracing costs no
// figure above, and prints e2e/traceparse's breakdown of each.
func traceBridges(t testing.TB, spire *leafClient, bridges []*benchBridge, n int) {
	t.Helper()
	signalAll := func() {
		for _, b := range bridges {
			if err := b.b.proc.cmd.Process.Signal(syscall.SIGUSR2); err != nil {
				t.Fatalf("e2e: signal %s: %v", b.label, err)
			}
		}
	}
	signalAll()
	from := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), time.Duration(n+2)*x509SVIDTTL*time.Second/2)
	defer cancel()
	if err := poll(ctx, fmt.Sprintf("%d rotations while tracing", n), 500*time.Millisecond, func() error {
		if got := len(spire.seenBetween(from, time.Now())); got < n {
			return fmt.Errorf("%d so far", got)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the bridges finish the last rotation
	to := time.Now()
	signalAll()
	rotations := spire.seenBetween(from, to)
	serials := make([]string, 0, len(rotations))
	for s := range rotations {
		serials = append(serials, s)
	}
	slices.SortFunc(serials, func(a, b string) int { return rotations[a].Compare(rotations[b]) })
	for _, b := range bridges {
		if err := poll(ctx, "trace of "+b.label, 100*time.Millisecond, func() error {
			_, err := os.Stat(b.trace)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		sds, folder := b.sds.seen(), b.folder.seen()
		args := []string{"run", ".", "-trace", b.trace}
		for _, s := range serials {
			args = append(args, "-rotation", fmt.Sprintf("%d,%s,%s", rotations[s].UnixNano(), unixNano(sds, s), unixNano(folder, s)))
		}
		dir, err := filepath.Abs("traceparse")
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := os.Stat(b.trace)
		fmt.Printf("\nruntime trace of bridge %s over %d rotations (%d KiB), by e2e/traceparse:\n%s",
			b.label, len(serials), fi.Size()>>10, goCommand(t, dir, args...))
	}
}

// unixNano is when seen had serial, in unix nanoseconds ("0": never).
func unixNano(seen map[string]time.Time, serial string) string {
	at, ok := seen[serial]
	if !ok {
		return "0"
	}
	return strconv.FormatInt(at.UnixNano(), 10)
}
