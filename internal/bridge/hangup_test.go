package bridge

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
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

// nothingBehind is a source with no sink behind.
type nothingBehind struct{}

func (nothingBehind) RetryNow() []string { return nil }

// testClock is a clock the test moves.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *testClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// TestASIGHUPRightAfterASignalActionIsTakenAsItsEchoAndSignalsNothing
// (issue 19, fault 4): when the pid file names a process that passes
// SIGHUP on to the bridge (tini as pid 1), the SIGHUP that comes back
// right after the action's signal re-runs nothing, so the bridge never
// signals again for it; an operator's SIGHUP later still re-runs the
// action. Before, every echo re-ran the action: an endless loop.
func TestASIGHUPRightAfterASignalActionIsTakenAsItsEchoAndSignalsNothing(t *testing.T) {
	// The consumer ignores SIGHUP, so the test counts signals by the
	// bridge's log, not by the consumer's death.
	consumer := exec.Command("/bin/sh", "-c", `trap "" HUP; exec sleep 300`)
	if err := consumer.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = consumer.Process.Kill(); _ = consumer.Wait() })
	pidFile := filepath.Join(t.TempDir(), "consumer.pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(consumer.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	clock := &testClock{now: time.Now()}
	logs := &testkit.LogBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	runner, err := reload.New(reload.Config{Actions: []reload.Action{reload.SignalAction{PIDFile: pidFile}}, Logger: log, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	folder, err := filesink.New(filesink.Config{Dir: filepath.Join(t.TempDir(), "creds"), Reload: runner, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := folder.Apply(t.Context(), testUpdate(t)); err != nil {
		t.Fatal(err)
	}
	signals := func() int { return strings.Count(logs.String(), "reload action done") }
	testkit.Eventually(t, "the swap's signal", func() bool { return signals() == 1 })

	ctx, cancel := context.WithCancel(t.Context())
	hups := make(chan os.Signal, 1)
	done := make(chan error, 1)
	go func() { done <- onHangup(ctx, hups, nothingBehind{}, []*filesink.Folder{folder}, log) }()
	defer func() { cancel(); <-done }()

	hups <- syscall.SIGHUP // the echo, within the window on the frozen clock
	testkit.Eventually(t, "the echo handled", func() bool { return strings.Contains(logs.String(), "taken as its echo") })
	if n := signals(); n != 1 {
		t.Fatalf("the echo made the bridge signal again (%d signals, want 1):\n%s", n, logs)
	}

	clock.add(2 * echoWindow) // an operator's SIGHUP, later
	hups <- syscall.SIGHUP
	testkit.Eventually(t, "the operator's SIGHUP re-running the action", func() bool { return signals() == 2 })
}

// testUpdate is one valid Update.
func testUpdate(t *testing.T) *rotation.Update {
	t.Helper()
	authority, err := devapi.NewCA(spiffeid.RequireTrustDomainFromString("example.org"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	svid, err := authority.Issue(spiffeid.RequireFromString("spiffe://example.org/db"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	u, err := rotation.NewUpdate(1, []*x509svid.SVID{svid}, []*x509bundle.Bundle{authority.Bundle()}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return u
}
