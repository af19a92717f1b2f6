//go:build e2e && (benchspire || benchfanout)

package e2e

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
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
