//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sds-bridge/sds-bridge/admin"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// diskFullSVIDTTL is the entry's X.509 TTL in this test: long enough that
// the agent does not rotate (at half of it) while the test runs, so every
// new SVID is one the test asked for by updating the entry.
const diskFullSVIDTTL = 600

// TestFullDiskFreedFolderCatchesUpWithoutRotation: a credential folder on
// a small tmpfs; the file system fills up, a rotation's swap fails, and the
// bridge says so (/readyz 503, "retrying" in /status) while the consumers
// keep the previous set. Once the disk is freed, the folder holds the
// current Update's serial within 5 s, with no new rotation (issue 11,
// fault 4: before, it waited for the next Workload API update, about when
// the old certificate expires with SPIRE's defaults).
func TestFullDiskFreedFolderCatchesUpWithoutRotation(t *testing.T) {
	requireRoot(t)
	work := newWorkDir(t)
	s := startSPIRE(t, work)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	// One entry for the bridge (root), with an ID to update it by.
	const entryID = "diskfull-db"
	entry := func(verb string, extra ...string) {
		t.Helper()
		args := append([]string{"entry", verb, "-entryID", entryID, "-parentID", s.agentID().String(),
			"-spiffeID", s.ID("/db").String(), "-selector", fmt.Sprintf("unix:uid:%d", os.Getuid()),
			"-x509SVIDTTL", strconv.Itoa(diskFullSVIDTTL)}, extra...)
		mustRun(t, ctx, s.serverCmd(args...))
	}
	entry("create")

	disk := filepath.Join(work, "disk")
	mountTmpfs(t, disk, "size=256k")
	certs := filepath.Join(disk, "certs")
	b := startBridge(t, work, "diskfull", bridgeConfig{
		WorkloadAPI: bridgeWorkloadAPI{Address: s.WorkloadAPIAddr(), FirstUpdateTimeout: "60s"},
		SDS:         noSDS(),
		Files:       []bridgeFolder{{Dir: certs, Layout: layoutHelper}},
	}, nil)
	adminURL := "http://" + b.Cfg.Admin.Listen
	sinkName := "files:" + certs

	// status reads /status; current says whether the folder holds the
	// serial of the bridge's current Update.
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	status := func() (admin.Status, error) {
		var st admin.Status
		resp, err := client.Get(adminURL + "/status")
		if err != nil {
			return st, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return st, fmt.Errorf("/status = %s", resp.Status)
		}
		return st, json.NewDecoder(resp.Body).Decode(&st)
	}
	current := func(st admin.Status) bool {
		return len(st.SVIDs) > 0 && len(st.Folders) == 1 && st.Folders[0].Material != nil &&
			st.Folders[0].Material.Serial == st.SVIDs[0].Serial && st.Folders[0].Material.Generation == st.Generation
	}
	sink := func(st admin.Status) admin.SinkStatus {
		for _, ss := range st.Sinks {
			if ss.Name == sinkName {
				return ss
			}
		}
		t.Fatalf("/status has no sink %s: %+v", sinkName, st.Sinks)
		return admin.SinkStatus{}
	}
	var st admin.Status
	if err := poll(ctx, "the folder holds the first SVID", 100*time.Millisecond, func() error {
		b.Running(t)
		var err error
		if st, err = status(); err != nil {
			return err
		}
		if !st.Ready || !current(st) {
			return fmt.Errorf("ready %v, problems %q", st.Ready, st.Problems)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	before := st.SVIDs[0].Serial
	t.Logf("generation %d on disk, serial %s", st.Generation, before)

	// Fill the file system until the kernel says no.
	fillerPath := filepath.Join(disk, "filler")
	filled := fillUntilENOSPC(t, fillerPath)
	t.Logf("tmpfs full after %d bytes of filler", filled)

	// A rotation on demand: a changed entry gets a new SVID at the next
	// agent sync (1 s). Its swap fails for want of space.
	entry("update", "-dns", "rotated.example.org")
	if err := poll(ctx, "the folder retrying the new generation", 100*time.Millisecond, func() error {
		b.Running(t)
		var err error
		if st, err = status(); err != nil {
			return err
		}
		ss := sink(st)
		if st.SVIDs[0].Serial == before || ss.RetryingSince.IsZero() || ss.Attempts < 2 {
			return fmt.Errorf("serial %s, sink %+v", st.SVIDs[0].Serial, ss)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ss := sink(st)
	if st.Ready || current(st) {
		t.Fatalf("/status says ready %v, folder current %v while the disk is full: %+v", st.Ready, current(st), st.Folders)
	}
	if m := st.Folders[0].Material; m == nil || m.Serial != before {
		t.Errorf("while the disk is full the folder holds %+v, want the previous set (serial %s) intact", m, before)
	}
	if !strings.Contains(ss.Error, "no space left on device") {
		t.Errorf("sink error %q does not name the full disk", ss.Error)
	}
	code, body := testkit.Get(t, adminURL+"/readyz")
	if want := fmt.Sprintf("retrying generation %d since ", st.Generation); code != http.StatusServiceUnavailable || !strings.Contains(body, want) {
		t.Errorf("/readyz = %d, want 503 saying %q:\n%s", code, want, body)
	}
	t.Logf("/readyz while full: %s", strings.TrimSpace(body))
	gen, serial := st.Generation, st.SVIDs[0].Serial

	// Free the disk; no rotation comes.
	if err := os.Remove(fillerPath); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	if err := poll(ctx, "the folder current after the disk was freed", 20*time.Millisecond, func() error {
		var err error
		if st, err = status(); err != nil {
			return err
		}
		if !current(st) {
			return fmt.Errorf("folder %+v, current serial %s", st.Folders[0].Material, st.SVIDs[0].Serial)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	took := time.Since(freed)
	t.Logf("disk freed → folder current (generation %d, serial %s) in %s; the retry was due %s after freeing, after %d failed attempts",
		gen, serial, took.Round(time.Millisecond), ss.NextRetryAt.Sub(freed).Round(time.Millisecond), ss.Attempts)
	if st.Generation != gen || st.SVIDs[0].Serial != serial {
		t.Fatalf("a new rotation came (generation %d, serial %s; freed at generation %d, serial %s): that proves nothing",
			st.Generation, st.SVIDs[0].Serial, gen, serial)
	}
	if took > 5*time.Second {
		t.Errorf("the folder became current %s after the disk was freed, want within 5 s", took)
	}
	if after := sink(st); after.Retries == 0 || !after.RetryingSince.IsZero() || after.Generation != gen {
		t.Errorf("sink after recovery = %+v, want generation %d by a retry, no longer retrying", after, gen)
	}
	if err := poll(ctx, "ready after the disk was freed", 100*time.Millisecond, func() error {
		if code, body := testkit.Get(t, adminURL+"/readyz"); code != http.StatusOK {
			return fmt.Errorf("/readyz = %d: %s", code, body)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// mountTmpfs mounts a tmpfs with opts on dir for the rest of the test.
// Cleanups run last first: it is unmounted after anything started later
// (the bridge) has stopped, and before the work dir is removed.
func mountTmpfs(t testing.TB, dir, opts string) {
	t.Helper()
	mkdirOwned(t, dir, 0o755, nil)
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, opts); err != nil {
		t.Fatalf("e2e: mount tmpfs (%s) on %s: %v", opts, dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("e2e: unmount %s: %v", dir, err)
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
}

// fillUntilENOSPC writes path until the file system has no block left and
// returns how much it wrote.
func fillUntilENOSPC(t testing.TB, path string) int64 {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var total int64
	for _, size := range []int{64 << 10, 4 << 10, 1} {
		chunk := make([]byte, size)
		for {
			n, err := f.Write(chunk)
			total += int64(n)
			if errors.Is(err, syscall.ENOSPC) {
				break
			}
			if err != nil {
				t.Fatalf("e2e: fill %s: %v", path, err)
			}
		}
	}
	if err := f.Sync(); err != nil && !errors.Is(err, syscall.ENOSPC) {
		t.Fatal(err)
	}
	if total == 0 {
		t.Fatalf("e2e: %s: the file system was full before the filler", path)
	}
	return total
}
