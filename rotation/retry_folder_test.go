package rotation_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/internal/devapi"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
	"github.com/sds-bridge/sds-bridge/reload"
	"github.com/sds-bridge/sds-bridge/rotation"
)

// folderBridge is a fake Workload API feeding a real Source with one real
// credential folder.
type folderBridge struct {
	t      *testing.T
	ca     *devapi.CA
	wl     *devapi.Server
	src    *rotation.Source
	folder *filesink.Folder
	dir    string
}

func startFolderBridge(t *testing.T, fc filesink.Config, rc rotation.Config) *folderBridge {
	t.Helper()
	tmp := testkit.ShortDir(t)
	log := slog.New(slog.DiscardHandler)
	authority, err := devapi.NewCA(spiffeid.RequireTrustDomainFromString("example.org"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	wl := devapi.NewServer(devapi.ServerConfig{SocketPath: filepath.Join(tmp, "wl.sock"), Logger: log})
	if err := wl.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(wl.Stop)
	fc.Dir = filepath.Join(tmp, "certs")
	if fc.Logger == nil {
		fc.Logger = log
	}
	folder, err := filesink.New(fc)
	if err != nil {
		t.Fatal(err)
	}
	if err := folder.Prepare(t.Context()); err != nil {
		t.Fatal(err)
	}
	rc.Address, rc.Sinks, rc.Logger = wl.Address(), []rotation.Sink{folder}, log
	src, err := rotation.New(rc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- src.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-ran; err != nil {
			t.Error(err)
		}
	})
	return &folderBridge{t: t, ca: authority, wl: wl, src: src, folder: folder, dir: fc.Dir}
}

// push serves a new SVID and returns its serial.
func (b *folderBridge) push() string {
	b.t.Helper()
	return b.pushTTL(time.Hour)
}

// pushTTL serves a new SVID valid for ttl and returns its serial.
func (b *folderBridge) pushTTL(ttl time.Duration) string {
	b.t.Helper()
	id := spiffeid.RequireFromString("spiffe://example.org/db")
	svid, err := b.ca.Issue(id, ttl)
	if err != nil {
		b.t.Fatal(err)
	}
	resp, err := devapi.X509Response([]*x509svid.SVID{svid}, []*x509bundle.Bundle{b.ca.Bundle()})
	if err != nil {
		b.t.Fatal(err)
	}
	b.wl.SetX509(resp)
	return svid.Certificates[0].SerialNumber.Text(16)
}

func (b *folderBridge) status(what string, cond func(rotation.SinkStatus) bool) rotation.SinkStatus {
	b.t.Helper()
	var st rotation.SinkStatus
	testkit.Eventually(b.t, what, func() bool {
		st = b.src.SinkStatuses()[0]
		return cond(st)
	})
	return st
}

// A folder whose disk failed under a rotation holds that rotation's set
// once the disk is back, without another rotation (fault 4: before, it
// stayed on the old set until the next Workload API update).
func TestFolderCatchesUpWithoutANewRotation(t *testing.T) {
	b := startFolderBridge(t, filesink.Config{MinSwapInterval: time.Millisecond}, rotation.Config{RetryBackoff: 5 * time.Millisecond, MaxRetryBackoff: 20 * time.Millisecond})
	b.push()
	b.status("generation 1 on disk", func(st rotation.SinkStatus) bool { return st.Generation == 1 })

	// The disk goes away under the folder: a file where it was.
	if err := os.Rename(b.dir, b.dir+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b.dir, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	b.push()
	st := b.status("generation 2 retried", func(st rotation.SinkStatus) bool { return st.Retries >= 2 })
	if !st.Retrying() || st.Pending != 2 || st.Generation != 1 || st.Err == nil {
		t.Errorf("status while the disk is away = %+v, want generation 2 retrying", st)
	}

	// Back: no new rotation, and the folder gets generation 2.
	if err := os.Remove(b.dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(b.dir+".away", b.dir); err != nil {
		t.Fatal(err)
	}
	st = b.status("generation 2 on disk", func(st rotation.SinkStatus) bool { return st.Generation == 2 })
	cur := b.src.Current()
	if cur.Generation != 2 {
		t.Fatalf("current generation %d: another rotation came, proving nothing", cur.Generation)
	}
	m, err := filesink.Inspect(filesink.InspectConfig{Dir: b.dir})
	if err != nil || m.Generation != 2 || m.Serial != cur.Leaf().SerialNumber.Text(16) {
		t.Errorf("folder after recovery: %+v, %v; want generation 2, serial %s", m, err, cur.Leaf().SerialNumber.Text(16))
	}
	// The first attempt and every retry but the last failed.
	if st.Retrying() || st.Err != nil || st.Failures != st.Retries {
		t.Errorf("status after recovery = %+v, want clean, as many failures as retries", st)
	}
}

// TestAFolderWhoseStableNameCannotBeMadeIsNotSwappedAgain (issue 19,
// fault 2): a directory planted at a stable name fails the swap after
// ..data has moved. The set is in place: the folder's reload action runs,
// the failure stays visible in the sink's status, and the same set is
// not swapped in again (before, the deliverer retried it every 1, 2, then
// 4 s, each time writing and fsyncing another copy of the private key,
// and the action never ran).
func TestAFolderWhoseStableNameCannotBeMadeIsNotSwappedAgain(t *testing.T) {
	action := &countingAction{}
	runner, err := reload.New(reload.Config{Actions: []reload.Action{action}, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	b := startFolderBridge(t, filesink.Config{Reload: runner}, rotation.Config{RetryBackoff: time.Millisecond})
	if err := os.MkdirAll(filepath.Join(b.dir, filesink.DefaultBundleFileName), 0o755); err != nil {
		t.Fatal(err)
	}
	b.push()
	st := b.status("the stable name's failure", func(st rotation.SinkStatus) bool { return st.Failures == 1 })
	if !errors.Is(st.Err, filesink.ErrStableName) || !errors.Is(st.Err, rotation.ErrUpdateInPlace) || st.Retrying() {
		t.Errorf("status = %+v, want ErrStableName, an update in place, not retried", st)
	}
	if woken := b.src.RetryNow(); len(woken) != 0 {
		t.Errorf("RetryNow woke %v: the folder would be swapped again", woken)
	}
	waitRunner(t, runner)
	if n := action.runs.Load(); n != 1 {
		t.Errorf("the reload action ran %d times, want once: the set is in place", n)
	}
	if m, err := filesink.Inspect(filesink.InspectConfig{Dir: b.dir}); err != nil || m.Generation != 1 {
		t.Errorf("folder: %+v, %v; want generation 1", m, err)
	}
	if st := b.src.SinkStatuses()[0]; st.Failures != 1 || st.Retries != 0 {
		t.Errorf("status after the action ran = %+v, want one failure, no retry", st)
	}
}

// A folder whose swap worked and whose reload action gave up stays
// applied: the action ran beside the swap, and its failure is the
// action's (Stats, /readyz), not the sink's, which would swap the set in
// again.
func TestAFailedReloadActionIsNotTheFoldersFailure(t *testing.T) {
	failing := reload.ExecAction{Command: []string{"/bin/sh", "-c", "exit 3"}}
	runner, err := reload.New(reload.Config{Actions: []reload.Action{failing}, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	b := startFolderBridge(t, filesink.Config{Reload: runner}, rotation.Config{RetryBackoff: time.Millisecond})
	b.push()
	b.status("generation 1 applied", func(st rotation.SinkStatus) bool { return st.Generation == 1 })
	waitRunner(t, runner)
	if st := b.src.SinkStatuses()[0]; st.Err != nil || st.Failures != 0 || st.Retrying() {
		t.Errorf("status = %+v, want generation 1 applied without error", st)
	}
	if fs := b.folder.Stats(); fs.WriteFailures != 0 || len(fs.Actions) != 1 || fs.Actions[0].Attempts != 1 || !fs.Actions[0].Failed() {
		t.Errorf("folder stats %+v, want the action failed after one attempt, no write failure", fs)
	}
}

// TestAFloodOfUpdatesIsCoalescedToOneSwapPerInterval (issue 19, fault
// 10): an agent that sends a new valid SVID as fast as it can (two SVIDs
// alternating did 259 swaps and SIGHUPs in 15 s) gets at most one swap,
// and one reload, per files[].min_swap_interval; the newest update always
// lands, and it is the one reloaded last. Without the pacing every
// generation was swapped. The bound is counted, not
// timed: n swaps at least interval apart take (n-1) intervals.
func TestAFloodOfUpdatesIsCoalescedToOneSwapPerInterval(t *testing.T) {
	const interval, updates = 100 * time.Millisecond, 30
	action := &countingAction{}
	runner, err := reload.New(reload.Config{Actions: []reload.Action{action}})
	if err != nil {
		t.Fatal(err)
	}
	logs := &testkit.LogBuffer{}
	b := startFolderBridge(t, filesink.Config{Reload: runner, MinSwapInterval: interval, Logger: slog.New(slog.NewTextHandler(logs, nil))}, rotation.Config{})
	start := time.Now()
	var last string
	for range updates {
		// Each update becomes a generation of its own: the source takes it
		// before the next comes (the folder need not).
		last = b.push()
		testkit.Eventually(t, "the source taking the update", func() bool {
			cur := b.src.Current()
			return cur != nil && cur.Leaf().SerialNumber.Text(16) == last
		})
	}
	b.status("the last update on disk", func(st rotation.SinkStatus) bool {
		cur := b.src.Current()
		return cur != nil && cur.Leaf().SerialNumber.Text(16) == last && st.Generation == cur.Generation
	})
	elapsed := time.Since(start)
	waitRunner(t, runner)
	swaps := strings.Count(logs.String(), "swapped in new generation")
	if most := int(elapsed/interval) + 1; swaps > most {
		t.Errorf("%d swaps in %s, want at most %d (one per %s)", swaps, elapsed, most, interval)
	}
	if m, err := filesink.Inspect(filesink.InspectConfig{Dir: b.dir}); err != nil || m.Serial != last {
		t.Errorf("folder: %+v, %v; want the last SVID (serial %s)", m, err, last)
	}
	reloads, gen := action.runs.Load(), b.src.Current().Generation
	if a := runner.Stats()[0]; reloads > int64(swaps) || a.Generation != gen {
		t.Errorf("%d reloads for %d swaps, the last for generation %d; want at most one per swap, the last for generation %d", reloads, swaps, a.Generation, gen)
	}
	t.Logf("%d updates (%d generations) in %s: %d swaps, %d reloads", updates, gen, elapsed, swaps, reloads)
}

// Pacing never holds an SVID for more than a quarter of its validity: with
// a minute between swaps, an 8 s SVID that follows a swap still lands
// within seconds, not after it has expired (dev's one-second SVIDs
// never reached the folder with the 1 s default before).
func TestPacingNeverHoldsAShortLivedSVIDUntilItExpires(t *testing.T) {
	b := startFolderBridge(t, filesink.Config{MinSwapInterval: filesink.MaxMinSwapInterval}, rotation.Config{})
	first := b.push()
	b.status("the first SVID on disk", func(st rotation.SinkStatus) bool { return st.Generation == 1 })
	short := b.pushTTL(8 * time.Second)
	if short == first {
		t.Fatal("the CA issued the same serial twice")
	}
	b.status("the 8 s SVID on disk well before the minute's pace", func(st rotation.SinkStatus) bool { return st.Generation == 2 })
	if m, err := filesink.Inspect(filesink.InspectConfig{Dir: b.dir}); err != nil || m.Serial != short {
		t.Errorf("folder: %+v, %v; want the 8 s SVID (serial %s)", m, err, short)
	}
}

// countingAction is a reload action that counts its runs.
type countingAction struct{ runs atomic.Int64 }

func (a *countingAction) Name() string { return "counting" }

func (a *countingAction) Run(context.Context, reload.Event) error {
	a.runs.Add(1)
	return nil
}

// waitRunner waits until runner has run every event handed to it.
func waitRunner(t *testing.T, runner *reload.Runner) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testkit.Timeout)
	defer cancel()
	if err := runner.Wait(ctx); err != nil {
		t.Fatalf("reload actions still running after %s: %v", testkit.Timeout, err)
	}
}
