package bridge

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.uber.org/goleak"

	"github.com/sds-bridge/sds-bridge/internal/config"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

func TestMain(m *testing.M) {
	if len(os.Args) == 3 && os.Args[1] == gateChildArg {
		runGateChild(os.Args[2])
		return
	}
	goleak.VerifyTestMain(m)
}

// testConfig is a defaulted, validated config: SDS on a socket and one
// folder, both in dir, admin on adminAddr, nothing behind the Workload API.
func testConfig(t *testing.T, dir, adminAddr string, yamlExtra string) *config.Config {
	t.Helper()
	c, err := config.Parse(strings.NewReader("workload_api:\n  address: unix://" + filepath.Join(dir, "none.sock") + "\n" +
		"sds:\n  socket: " + filepath.Join(dir, "sds.sock") + "\n" + yamlExtra +
		"files:\n  - dir: " + filepath.Join(dir, "certs") + "\nadmin:\n  listen: \"" + adminAddr + "\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	c.Default()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

// New takes the bridge's locks first; when a later step fails (here the
// admin port is taken) it gives every one of them back, so the next
// bridge on the same folder and socket starts.
func TestNewGivesBackWhatItTookWhenItFails(t *testing.T) {
	dir := testkit.ShortDir(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := testConfig(t, dir, busy.Addr().String(), "")
	if _, err := New(t.Context(), Options{Config: cfg, Logger: testkit.Logger(t)}); err == nil || !strings.Contains(err.Error(), "admin.listen") {
		t.Fatalf("New with a busy admin port = %v, want an admin.listen error", err)
	}
	b := &Bridge{Options: Options{Config: cfg, Logger: testkit.Logger(t)}}
	if err := b.lockAll(); err != nil {
		t.Fatalf("the failed New kept a lock: %v", err)
	}
	b.close()
}

// Describe names the SDS secrets as sds.Names serves them: without ALL
// when disable_spiffe_cert_validation is set, and the admin address the
// listener really bound.
func TestDescribeNamesWhatIsServed(t *testing.T) {
	for _, disable := range []bool{false, true} {
		dir := testkit.ShortDir(t)
		extra := ""
		if disable {
			extra = "  disable_spiffe_cert_validation: true\n"
		}
		b, err := New(t.Context(), Options{Config: testConfig(t, dir, "127.0.0.1:0", extra), Logger: testkit.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		id := spiffeid.RequireFromString("spiffe://example.org/dev")
		b.Describe(&out, []spiffeid.ID{id}, []spiffeid.TrustDomain{id.TrustDomain()})
		names := "default, ROOTCA, ALL, spiffe://example.org/dev, spiffe://example.org)"
		if disable {
			names = "default, ROOTCA, spiffe://example.org/dev, spiffe://example.org)"
		}
		if !strings.Contains(out.String(), "(names: "+names) || !strings.Contains(out.String(), "http://"+b.adminAddr()+" ") || strings.HasSuffix(b.adminAddr(), ":0") {
			t.Errorf("disable %t: Describe =\n%s\nwant names %q and the bound admin address", disable, out.String(), names)
		}
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := b.Run(ctx); err != nil {
			t.Errorf("Run on a cancelled context = %v", err)
		}
	}
}

// A folder refused for being writable by every user (a helper.conf's
// empty cert_dir imported from /tmp) gets nothing written into it, not
// even the bridge's lock file.
func TestARefusedWorldWritableFolderGetsNoLockFile(t *testing.T) {
	dir := testkit.ShortDir(t)
	cfg := testConfig(t, dir, "127.0.0.1:0", "")
	certs := cfg.Files[0].Dir
	if err := os.Mkdir(certs, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(certs, 0o1777); err != nil {
		t.Fatal(err)
	}
	_, err := New(t.Context(), Options{Config: cfg, Logger: testkit.Logger(t)})
	if err == nil || !strings.Contains(err.Error(), "writable by every user") {
		t.Fatalf("New on a world-writable folder = %v, want it refused", err)
	}
	entries, err := os.ReadDir(certs)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("the refused folder holds %s", e.Name())
	}
}
