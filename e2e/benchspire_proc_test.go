//go:build e2e && benchspire

package e2e

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// procStat is what /proc says about a process.
type procStat struct {
	cpu time.Duration // utime + stime
	mem procMem
}

// procMem is resident memory in bytes from /proc/PID/status. VmRSS is
// RssAnon + RssFile + RssShmem; RssAnon is what each pod pays on its own,
// RssFile (the binary's pages) is shared by every copy on a node. VmHWM is
// the kernel's record of the peak VmRSS.
type procMem struct {
	VmRSS, RssAnon, RssFile, VmHWM int64
}

// clockTick is USER_HZ, the unit of utime and stime; 100 on every Linux
// architecture Go supports.
const clockTick = 100

func readProcStat(t testing.TB, pid int) procStat {
	t.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatalf("e2e: %v", err)
	}
	// The command name may hold spaces; the fields after it do not.
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatalf("e2e: /proc/%d/stat: %v", pid, err)
	}
	st := procStat{cpu: time.Duration(utime+stime) * time.Second / clockTick}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("e2e: %v", err)
	}
	want := map[string]*int64{"VmRSS": &st.mem.VmRSS, "RssAnon": &st.mem.RssAnon, "RssFile": &st.mem.RssFile, "VmHWM": &st.mem.VmHWM}
	for line := range strings.SplitSeq(string(status), "\n") {
		key, v, _ := strings.Cut(line, ":")
		field, ok := want[key]
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			t.Fatalf("e2e: /proc/%d/status %s: %v", pid, key, err)
		}
		*field = kb << 10
	}
	return st
}

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
