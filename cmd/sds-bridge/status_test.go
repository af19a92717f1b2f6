package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sds-bridge/sds-bridge/admin"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// Nothing listening: status says where it looked and exits 3, apart
// from "not ready" (1) and a wrong command line (2).
func TestStatusWithoutBridge(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	var out bytes.Buffer
	err = run(t.Context(), []string{"status", "--admin", addr}, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "is the bridge running with its admin endpoint at "+addr) {
		t.Errorf("status against nothing: %v", err)
	}
	if code := exitStatus(err, &out); code != exitNoAnswer {
		t.Errorf("status against nothing: exit status %d, want %d", code, exitNoAnswer)
	}
}

// TestStatusExitsNonZeroWhenTheBridgeIsNotReady: a bridge whose folder's
// reload action always fails is not ready; `status` prints NOT READY and
// exits 1, with --json too, so a script or cron job can act on it.
func TestStatusExitsNonZeroWhenTheBridgeIsNotReady(t *testing.T) {
	dir := testkit.ShortDir(t)
	cfg := filepath.Join(dir, "bridge.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`
sds:
  socket: %s
files:
  - dir: %s
    on_rotate:
      - exec:
          command: ["/bin/false"]
`, filepath.Join(dir, "sds.sock"), filepath.Join(dir, "certs"))), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDev(t, dir, "--config", cfg, "--admin", "127.0.0.1:0", "--svid-ttl", "1h")
	url := d.adminURL()
	// Wait for the action's failure itself: a problem seen earlier can be
	// the grace before the folder's first apply, which clears by itself.
	testkit.Eventually(t, "a failed reload action", func() bool {
		st := d.status(url)
		return len(st.Folders) == 1 && len(st.Folders[0].Actions) == 1 &&
			st.Folders[0].Actions[0].State == admin.ActionFailed
	})
	addr := strings.TrimPrefix(url, "http://")
	for _, args := range [][]string{{"status", "--admin", addr}, {"status", "--admin", addr, "--json"}} {
		var out, errOut syncBuffer
		code := exitStatus(run(t.Context(), args, &out, &errOut), &errOut)
		if code != exitBad {
			t.Errorf("%v: exit status %d, want %d\n%s%s", args, code, exitBad, out.String(), errOut.String())
		}
		if len(args) == 4 {
			var doc struct{ Ready *bool }
			if err := json.Unmarshal([]byte(out.String()), &doc); err != nil || doc.Ready == nil || *doc.Ready {
				t.Errorf("%v printed no document saying not ready (%v):\n%s", args, err, out.String())
			}
		} else if !strings.Contains(out.String(), "NOT READY") {
			t.Errorf("%v printed no NOT READY:\n%s", args, out.String())
		}
	}
}

// A taken admin port stops the bridge at start with the key in the error.
func TestAdminPortTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dir := testkit.ShortDir(t)
	t.Chdir(dir)
	var out syncBuffer
	err = run(t.Context(), []string{"dev", "--admin", l.Addr().String(), "--sds-socket", dir + "/sds.sock", "--dir", dir + "/certs"}, &out, &out)
	if err == nil || !strings.Contains(err.Error(), `admin.listen "`+l.Addr().String()+`"`) || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("dev on a taken admin port: %v", err)
	}
}

// TestStatusURL: every form of the admin address reaches /status, a
// wildcard listen address over loopback; one that is neither host:port
// nor a URL is refused naming the flag.
func TestStatusURL(t *testing.T) {
	for addr, want := range map[string]string{
		"127.0.0.1:8081":       "http://127.0.0.1:8081/status",
		"0.0.0.0:8081":         "http://127.0.0.1:8081/status",
		":9090":                "http://127.0.0.1:9090/status",
		"[::]:8081":            "http://[::1]:8081/status",
		"http://bridge:8081/":  "http://bridge:8081/status",
		"https://bridge.local": "https://bridge.local/status",
		"localhost:8081":       "http://localhost:8081/status",
	} {
		if got, err := statusURL(addr); err != nil || got != want {
			t.Errorf("statusURL(%q) = %q, %v; want %q", addr, got, err, want)
		}
	}
	if _, err := statusURL("bridge"); err == nil || !strings.Contains(err.Error(), `--admin "bridge"`) {
		t.Errorf("statusURL(\"bridge\") error = %v, want one naming the flag", err)
	}
}
