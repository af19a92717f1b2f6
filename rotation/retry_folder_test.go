package rotation_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/folderstate"
	"github.com/sds-bridge/sds-bridge/internal/ca"
	"github.com/sds-bridge/sds-bridge/internal/devapi"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
	"github.com/sds-bridge/sds-bridge/reload"
	"github.com/sds-bridge/sds-bridge/rotation"
)

// folderBridge is a fake Workload API feeding a real Source with one real
// credential folder.
type folderBridge struct {
	t      *testing.T
	ca     *ca.CA
	wl     *devapi.Server
	src    *rotation.Source
	folder *filesink.Folder
	dir    string
}

func startFolderBridge(t *testing.T, fc filesink.Config, rc rotation.Config) *folderBridge {
	t.Helper()
	tmp := testkit.ShortDir(t)
	log := slog.New(slog.DiscardHandler)
	authority, err := ca.New(spiffeid.RequireTrustDomainFromString("example.org"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	wl := devapi.NewServer(devapi.ServerConfig{SocketPath: filepath.Join(tmp, "wl.sock"), Logger: log})
	if err := wl.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(wl.Stop)
	fc.Dir, fc.Logger = filepath.Join(tmp, "certs"), log
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

func (b *folderBridge) push() {
	b.t.Helper()
	id := spiffeid.RequireFromString("spiffe://example.org/db")
	svid, err := b.ca.Issue(id, time.Hour)
	if err != nil {
		b.t.Fatal(err)
	}
	resp, err := devapi.X509Response([]*x509svid.SVID{svid}, []*x509bundle.Bundle{b.ca.Bundle()})
	if err != nil {
		b.t.Fatal(err)
	}
	b.wl.SetX509(resp)
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
	b := startFolderBridge(t, filesink.Config{}, rotation.Config{RetryBackoff: 5 * time.Millisecond, MaxRetryBackoff: 20 * time.Millisecond})
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
	m, err := folderstate.Inspect(folderstate.Config{Dir: b.dir})
	if err != nil || m.Generation != 2 || m.Serial != cur.Leaf().SerialNumber.Text(16) {
		t.Errorf("folder after recovery: %+v, %v; want generation 2, serial %s", m, err, cur.Leaf().SerialNumber.Text(16))
	}
	// The first attempt and every retry but the last failed.
	if st.Retrying() || st.Err != nil || st.Failures != st.Retries {
		t.Errorf("status after recovery = %+v, want clean, as many failures as retries", st)
	}
}

// A folder whose swap worked and whose reload action gave up is not
// swapped in again: filesink.ErrReloadAction is an update in place. The
// failure stays visible; the generation on disk is the current one.
func TestFolderWhoseReloadActionFailedIsNotSwappedAgain(t *testing.T) {
	failing := reload.ExecAction{Command: []string{"/bin/sh", "-c", "exit 3"}}
	runner, err := reload.New(reload.Config{Actions: []reload.Action{failing}, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	b := startFolderBridge(t, filesink.Config{Reload: runner},
		rotation.Config{RetryBackoff: time.Millisecond})
	b.push()
	st := b.status("the action's failure", func(st rotation.SinkStatus) bool { return st.Failures == 1 })
	if !errors.Is(st.Err, filesink.ErrReloadAction) || !errors.Is(st.Err, rotation.ErrUpdateInPlace) || st.Retrying() {
		t.Errorf("status = %+v, want ErrReloadAction, an update in place, not retried", st)
	}
	if woken := b.src.RetryNow(); len(woken) != 0 {
		t.Errorf("RetryNow woke %v: a folder would be swapped again for its action", woken)
	}
	if m, err := folderstate.Inspect(folderstate.Config{Dir: b.dir}); err != nil || m.Generation != 1 {
		t.Errorf("folder: %+v, %v; want generation 1", m, err)
	}
	if fs := b.folder.Stats(); fs.WriteFailures != 0 || len(fs.Actions) != 1 || fs.Actions[0].Attempts != 1 {
		t.Errorf("folder stats %+v, want one action attempt and no write failure", fs)
	}
}
