//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestPostgresSupervisedFromSpiffeHelperConf is spiffe-helper's own
// PostgreSQL integration test, moved to the bridge: a helper.conf whose cmd
// is the postgres server (custom names server.crt, server.key, root.crt;
// renew_signal = "SIGHUP"), given as is to `run --spiffe-helper-config`,
// run as the database's OS user against the real agent. The bridge starts
// PostgreSQL as its child only after the folder holds a complete set,
// SIGHUPs it after each swap, and sslmode=verify-full queries succeed
// across ≥ 3 rotations with the server presenting each new certificate,
// the postmaster PID never changing; a plaintext connection is refused by
// pg_hba.conf (hostssl only); SIGTERM to the bridge stops PostgreSQL and
// the bridge exits with its status, 0.
func TestPostgresSupervisedFromSpiffeHelperConf(t *testing.T) {
	d := newDBStack(t)
	clientBridge := d.StartClientBridge(t)
	d.WaitReady(t, d.Client, nil)

	names := map[string]string{"cert": "server.crt", "key": "server.key", "ca": "root.crt"}
	path := func(k string) string { return filepath.Join(d.DB.Dir, names[k]) }
	conf := filepath.Join(d.Work, "helper.conf")
	writeFile(t, conf, fmt.Appendf(nil, `# In the style of spiffe-helper's PostgreSQL integration test.
agent_address = %q
cmd = %q
cmd_args = "-D %s -c ssl=on -c ssl_cert_file=%s -c ssl_key_file=%s -c ssl_ca_file=%s"
cert_dir = %q
svid_file_name = %q
svid_key_file_name = %q
svid_bundle_file_name = %q
renew_signal = "SIGHUP"
`, d.SPIRE.WorkloadAPIAddr(), filepath.Join(d.PG.BinDir, "postgres"), d.PG.DataDir, path("cert"), path("key"), path("ca"),
		d.DB.Dir, names["cert"], names["key"], names["ca"]), 0o644, nil)

	bridge := startProc(t, cmdSpec{
		Name: "bridge-supervise",
		Path: bridgeBin,
		Args: []string{"run", "--spiffe-helper-config", conf, "--log-format", "text"},
		Dir:  d.Work,
		User: d.PGUser,
	}, filepath.Join(d.Work, "bridge-supervise.log"))

	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()

	// The child's pid, from the bridge's log; it must be the postmaster.
	started := regexp.MustCompile(`msg="supervised program: started".* pid=(\d+)`)
	var pid int
	if err := poll(ctx, "PostgreSQL started by the bridge and accepting TLS", 200*time.Millisecond, func() error {
		if bridge.Exited() {
			t.Fatalf("the bridge exited with %d:\n%s", bridge.ExitCode(), tailFile(bridge.LogPath, 40))
		}
		m := started.FindStringSubmatch(readFileString(bridge.LogPath))
		if m == nil {
			return fmt.Errorf("no \"supervised program: started\" line")
		}
		pid, _ = strconv.Atoi(m[1])
		_, err := d.Connect(ctx)
		return err
	}); err != nil {
		t.Fatalf("%v\n%s", err, tailFile(bridge.LogPath, 40))
	}
	log := readFileString(bridge.LogPath)
	if sw, st := strings.Index(log, "swapped in new generation"), strings.Index(log, "supervised program: started"); sw < 0 || sw > st {
		t.Fatalf("PostgreSQL was started before the folder held a set (swap at %d, start at %d in the log)", sw, st)
	}
	if pm, err := d.PG.PostmasterPID(); err != nil || pm != pid {
		t.Fatalf("postmaster.pid says %d (%v), the bridge started %d", pm, err, pid)
	}
	if ppid := parentPID(t, pid); ppid != bridge.PID() {
		t.Fatalf("the postmaster's parent is %d, not the bridge (%d)", ppid, bridge.PID())
	}

	// Plaintext: refused by pg_hba.conf, which has hostssl lines only.
	if err := plaintextConnect(ctx, d.PG.Port); err == nil {
		t.Fatal("a plaintext connection got in")
	} else if !strings.Contains(err.Error(), "no pg_hba.conf entry") || !strings.Contains(err.Error(), "no encryption") {
		t.Fatalf("plaintext refused, but not by pg_hba.conf: %v", err)
	} else {
		t.Logf("plaintext: %v", err)
	}

	const wantRotations = 3
	var serverSerials []string
	var startTime time.Time
	conns := 0
	for len(serverSerials) < wantRotations+1 {
		got, err := d.Connect(ctx)
		conns++
		if err != nil {
			t.Fatalf("verify-full connection %d failed (after server serials %v): %v", conns, serverSerials, err)
		}
		if !got.SSL {
			t.Fatalf("connection %d is not over TLS", conns)
		}
		if startTime.IsZero() {
			startTime = got.StartTime
		}
		if !got.StartTime.Equal(startTime) {
			t.Fatalf("connection %d: the postmaster restarted (start time %s, was %s)", conns, got.StartTime, startTime)
		}
		if now, err := d.PG.PostmasterPID(); err != nil || now != pid {
			t.Fatalf("connection %d: postmaster PID %d (%v), was %d", conns, now, err, pid)
		}
		if s := got.ServerSerial.String(); len(serverSerials) == 0 || serverSerials[len(serverSerials)-1] != s {
			serverSerials = append(serverSerials, s)
			t.Logf("connection %d: server serial %s", conns, s)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("only %d server certificates in %d connections: %v\n%s", len(serverSerials), conns, ctx.Err(), tailFile(bridge.LogPath, 40))
		case <-time.After(250 * time.Millisecond):
		}
	}
	checkOwnedKey(t, path("key"), d.PGUser)
	log = readFileString(bridge.LogPath)
	hups := strings.Count(log, "received SIGHUP, reloading configuration files")
	if hups < wantRotations {
		t.Errorf("PostgreSQL logged %d SIGHUPs for %d rotations", hups, wantRotations)
	}
	clientBridge.Running(t)
	t.Logf("%d verify-full connections over %d server certificates; postmaster %d, a child of the bridge, unchanged; %d SIGHUPs", conns, len(serverSerials), pid, hups)

	// SIGTERM to the bridge reaches PostgreSQL; the bridge exits with its
	// status once it has shut down.
	if !bridge.Stop(60 * time.Second) {
		t.Fatalf("the bridge did not exit within 60s of SIGTERM:\n%s", tailFile(bridge.LogPath, 30))
	}
	if code := bridge.ExitCode(); code != 0 {
		t.Fatalf("the bridge exited %d after SIGTERM, want PostgreSQL's 0:\n%s", code, tailFile(bridge.LogPath, 30))
	}
	log = readFileString(bridge.LogPath)
	for _, want := range []string{`signal=SIGTERM why="the bridge received it"`, "database system is shut down", "supervised program: exited with status 0"} {
		if !strings.Contains(log, want) {
			t.Errorf("the bridge's log lacks %q:\n%s", want, tailFile(bridge.LogPath, 30))
		}
	}
	if _, err := os.Stat(d.PG.PIDFile()); !os.IsNotExist(err) {
		t.Errorf("postmaster.pid still there after the bridge exited: %v", err)
	}
}

// parentPID reads pid's parent from /proc.
func parentPID(t *testing.T, pid int) int {
	t.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// pid (comm) state ppid …; comm may hold spaces, so cut at the last ')'.
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	ppid, err := strconv.Atoi(fields[1])
	if err != nil {
		t.Fatal(err)
	}
	return ppid
}

// plaintextConnect tries a connection without TLS.
func plaintextConnect(ctx context.Context, port int) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable", port))
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

// checkOwnedKey checks what PostgreSQL demands of ssl_key_file: a
// regular file (behind the stable name) owned by the server's user, 0600.
func checkOwnedKey(t *testing.T, key string, u *osUser) {
	t.Helper()
	fi, err := os.Stat(key)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 || st.Uid != u.UID {
		t.Errorf("%s: mode %s uid %d, want a regular file 0600 owned by %s (%d)", key, fi.Mode(), st.Uid, u.Name, u.UID)
	}
}
