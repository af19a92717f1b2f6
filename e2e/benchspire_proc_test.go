//go:build e2e && benchspire

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// grpcRoundTrip is the median of n grpc.health.v1 Checks on conn.
func grpcRoundTrip(t testing.TB, conn *grpc.ClientConn, n int) time.Duration {
	t.Helper()
	client := healthpb.NewHealthClient(conn)
	times := make([]time.Duration, 0, n)
	for range n {
		start := time.Now()
		if _, err := client.Check(t.Context(), &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("e2e: health check: %v", err)
		}
		times = append(times, time.Since(start))
	}
	slices.Sort(times)
	return quantile(times, 0.5)
}

// fsyncRename is the median of n durable replacements of a small file in
// dir: write, fsync, rename over the target, fsync the directory.
func fsyncRename(t testing.TB, dir string, n int) time.Duration {
	t.Helper()
	mkdirOwned(t, dir, 0o755, nil)
	data := make([]byte, 1024)
	target := filepath.Join(dir, "target")
	times := make([]time.Duration, 0, n)
	for i := range n {
		start := time.Now()
		tmp := filepath.Join(dir, fmt.Sprintf("tmp-%d", i))
		if err := writeSynced(tmp, data); err != nil {
			t.Fatalf("e2e: %v", err)
		}
		if err := os.Rename(tmp, target); err != nil {
			t.Fatalf("e2e: %v", err)
		}
		if err := syncPath(dir); err != nil {
			t.Fatalf("e2e: %v", err)
		}
		times = append(times, time.Since(start))
	}
	slices.Sort(times)
	return quantile(times, 0.5)
}

func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncPath(path string) error {
	d, err := os.Open(path)
	if err != nil {
		return err
	}
	serr := d.Sync()
	if cerr := d.Close(); serr == nil {
		serr = cerr
	}
	return serr
}
