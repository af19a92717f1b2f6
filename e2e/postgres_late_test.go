//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// TestPostgresStartedAfterTheBridge is the Kubernetes order: the bridge is
// a native sidecar that starts, and writes the folder, before PostgreSQL
// exists. Its first swaps find no postmaster.pid: that is "no server to
// reload", not a failure, so /readyz is 200 within 5 s of the folder being
// written (the pod is not held NotReady until the next rotation). Then
// PostgreSQL starts on the files and presents the folder's certificate; the
// bridge, seeing postmaster.pid appear, sends it one SIGHUP anyway; and
// after the next rotation the server presents the new certificate.
func TestPostgresStartedAfterTheBridge(t *testing.T) {
	d := newDBStack(t)
	if _, err := os.Stat(d.PG.PIDFile()); !os.IsNotExist(err) {
		t.Fatalf("postmaster.pid before PostgreSQL started: %v", err)
	}
	dbBridge := d.StartDBBridge(t, reloadBySignal)
	clientBridge := d.StartClientBridge(t)
	admin := "http://" + dbBridge.Cfg.Admin.Listen

	// The folder and /readyz, polled together: when was the folder first
	// complete, and when did /readyz first say 200.
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	var writtenAt, readyAt time.Time
	if err := poll(ctx, "the database's folder and /readyz", 20*time.Millisecond, func() error {
		dbBridge.Running(t)
		if writtenAt.IsZero() {
			if _, err := d.DB.Leaf(); err != nil {
				return err
			}
			writtenAt = time.Now()
		}
		code, body, err := httpGet(ctx, admin+"/readyz")
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			if time.Since(writtenAt) > 5*time.Second {
				t.Fatalf("/readyz is still %d %s after the folder was written: %s", code, time.Since(writtenAt).Round(time.Millisecond), oneLine(body))
			}
			return fmt.Errorf("/readyz %d: %s", code, oneLine(body))
		}
		readyAt = time.Now()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	took := readyAt.Sub(writtenAt)
	t.Logf("folder written → /readyz 200 in %s (polled every 20ms; no PostgreSQL yet)", took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Fatalf("/readyz became 200 %s after the folder was written, want within 5s", took)
	}
	// And it stays 200: the reload action's outcome (no server) is no
	// failure. 2 s is longer than the action's retries would take.
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if code, body, err := httpGet(ctx, admin+"/readyz"); err != nil || code != http.StatusOK {
			t.Fatalf("/readyz went %d (%v) without PostgreSQL: %s", code, err, oneLine(body))
		}
	}
	if _, err := os.Stat(d.PG.PIDFile()); !os.IsNotExist(err) {
		t.Fatalf("postmaster.pid appeared before PostgreSQL was started: %v", err)
	}
	action := d.actionStatus(t, ctx, admin)
	if action.State != "no server to reload" || action.Failures != 0 || !strings.Contains(action.NoServer, "postmaster.pid") {
		t.Fatalf("/status: signal action %+v, want no server to reload and no failure", action)
	}

	d.PG.Start(t)
	d.WaitReady(t, d.Client, nil)
	pid, err := d.PG.PostmasterPID()
	if err != nil {
		t.Fatal(err)
	}

	// PostgreSQL serves what is in the folder. A rotation may fall between
	// reading the folder and the handshake: then read both again.
	first := d.serverMatchesFolder(t, ctx, "")
	t.Logf("PostgreSQL (postmaster %d) presents the folder's certificate, serial %s", pid, first)

	// The bridge saw postmaster.pid appear (it polls every second) and
	// reloaded the server once. A rotation in that second reloads it first;
	// then the late reload has nothing left to do.
	late := false
	if err := poll(ctx, "a reload of the started server", 100*time.Millisecond, func() error {
		log := readFileString(dbBridge.proc.LogPath)
		late = strings.Contains(log, "the server appeared after the swap")
		if !late && !strings.Contains(log, "reload action done") {
			return fmt.Errorf("the bridge's log shows no reload since PostgreSQL started")
		}
		if !strings.Contains(readFileString(d.PG.LogPath), "received SIGHUP, reloading configuration files") {
			return fmt.Errorf("no SIGHUP in the server's log")
		}
		return nil
	}); err != nil {
		t.Fatalf("%v\n---- bridge log ----\n%s", err, tailFile(dbBridge.proc.LogPath, 30))
	}
	if late {
		t.Logf("the bridge reloaded PostgreSQL once when postmaster.pid appeared")
	} else {
		t.Logf("a rotation reloaded PostgreSQL before the bridge's poll saw postmaster.pid")
	}

	// The next rotation reaches the running server.
	second := d.serverMatchesFolder(t, ctx, first)
	t.Logf("after a rotation PostgreSQL presents serial %s", second)

	if now, err := d.PG.PostmasterPID(); err != nil || now != pid {
		t.Fatalf("postmaster PID %d (%v), was %d: the server was restarted", now, err, pid)
	}
	if code, body, err := httpGet(ctx, admin+"/readyz"); err != nil || code != http.StatusOK {
		t.Errorf("/readyz with PostgreSQL running = %d %v: %s", code, err, oneLine(body))
	}
	if a := d.actionStatus(t, ctx, admin); a.State != "ok" || a.Failures != 0 {
		t.Errorf("/status: signal action %+v, want ok and no failure", a)
	}
	dbBridge.Running(t)
	clientBridge.Running(t)
}

// serverMatchesFolder waits until a connection to PostgreSQL is served
// the certificate the database's folder holds, one whose serial is not
// notSerial, and returns that serial. It fails after 30 s (SVIDs rotate
// every ~5 s here).
func (d *dbStack) serverMatchesFolder(t *testing.T, ctx context.Context, notSerial string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var last string
	for {
		before, err := d.DB.Leaf()
		if err != nil {
			t.Fatal(err)
		}
		got, err := d.Connect(ctx)
		if err != nil {
			t.Fatalf("connect to PostgreSQL: %v", err)
		}
		after, err := d.DB.Leaf()
		if err != nil {
			t.Fatal(err)
		}
		serial := got.ServerSerial.String()
		if !got.SSL {
			t.Fatal("the connection is not over TLS")
		}
		if serial != notSerial && before.SerialNumber.Cmp(after.SerialNumber) == 0 && before.SerialNumber.Cmp(got.ServerSerial) == 0 {
			return serial
		}
		last = fmt.Sprintf("server serial %s, folder %s then %s", serial, before.SerialNumber, after.SerialNumber)
		select {
		case <-ctx.Done():
			t.Fatalf("PostgreSQL never presented the folder's certificate (other than %q): last %s", notSerial, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// actionStatusJSON is the part of the bridge's /status this test reads.
type actionStatusJSON struct {
	Action     string `json:"action"`
	Generation uint64 `json:"generation"`
	State      string `json:"state"`
	NoServer   string `json:"no_server"`
	Error      string `json:"error"`
	Failures   uint64 `json:"failures"`
}

// actionStatus reads the database bridge's one reload action from /status.
func (d *dbStack) actionStatus(t *testing.T, ctx context.Context, admin string) actionStatusJSON {
	t.Helper()
	code, body, err := httpGet(ctx, admin+"/status")
	if err != nil || code != http.StatusOK {
		t.Fatalf("/status = %d %v", code, err)
	}
	var st struct {
		Folders []struct {
			Dir     string             `json:"dir"`
			Actions []actionStatusJSON `json:"actions"`
		} `json:"folders"`
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("/status: %v\n%s", err, body)
	}
	if len(st.Folders) != 1 || st.Folders[0].Dir != d.DB.Dir || len(st.Folders[0].Actions) != 1 {
		t.Fatalf("/status folders = %+v, want %s with one action", st.Folders, d.DB.Dir)
	}
	return st.Folders[0].Actions[0]
}

// httpGet does one GET on a fresh connection (no keep-alive: nothing stays
// open after the test).
func httpGet(ctx context.Context, url string) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

func readFileString(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}
