//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/sds-bridge/sds-bridge/internal/devapi"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// dbStack is the seed's second pattern: PostgreSQL reading its TLS
// material from a credential folder written by a bridge that runs as the
// database's own OS user (its own SPIRE entry, unix:user:postgres), and a
// backend whose client SVID a second bridge writes in the SPIFFE layout.
type dbStack struct {
	Work     string
	SPIRE    *spire
	PGUser   *osUser
	DB       folder // spiffe-helper layout, owned by the database user
	Client   folder // spiffe layout, the backend's
	PG       *postgres
	DBID     spiffeid.ID
	ClientID spiffeid.ID
}

func newDBStack(t *testing.T) *dbStack {
	t.Helper()
	requireBridge(t)
	_, pgUser := requirePostgres(t)
	work := newWorkDir(t)
	s := startSPIRE(t, work,
		spireEntry{Path: "/db", Selector: "unix:user:" + pgUser.Name},
		spireEntry{Path: "/backend", Selector: "unix:uid:0"},
	)
	d := &dbStack{
		Work:     work,
		SPIRE:    s,
		PGUser:   pgUser,
		DB:       folder{Dir: filepath.Join(work, "db"), Layout: layoutHelper, TD: s.TrustDomain},
		Client:   folder{Dir: filepath.Join(work, "client"), Layout: layoutSPIFFE, TD: s.TrustDomain},
		DBID:     s.ID("/db"),
		ClientID: s.ID("/backend"),
	}
	mkdirOwned(t, d.DB.Dir, 0o755, pgUser)
	mkdirOwned(t, d.Client.Dir, 0o755, nil)
	d.PG = initPostgres(t, work, pgTLSFiles{
		Cert: filepath.Join(d.DB.Dir, helperCert),
		Key:  filepath.Join(d.DB.Dir, helperKey),
		CA:   filepath.Join(d.DB.Dir, helperBundle),
	})
	return d
}

// reloadBy names how the database's bridge reloads PostgreSQL.
type reloadBy string

const (
	reloadBySignal   reloadBy = "signal"   // SIGHUP through postmaster.pid
	reloadByPostgres reloadBy = "postgres" // SELECT pg_reload_conf() over the local socket
)

// StartDBBridge starts the database's bridge as the database user. It
// writes the spiffe-helper layout with the key owned by that user and
// reloads PostgreSQL after each swap (through postmaster.pid, or with
// pg_reload_conf()); until the server runs neither works, which the bridge
// must tolerate.
func (d *dbStack) StartDBBridge(t *testing.T, how reloadBy) *bridge {
	t.Helper()
	action := bridgeAction{Signal: &bridgeSignal{PIDFile: d.PG.PIDFile(), Signal: "SIGHUP"}}
	if how == reloadByPostgres {
		action = bridgeAction{Postgres: &bridgePostgres{DSN: d.PG.LocalDSN()}}
	}
	return startBridge(t, d.Work, "db", bridgeConfig{
		WorkloadAPI: bridgeWorkloadAPI{Address: d.SPIRE.WorkloadAPIAddr(), FirstUpdateTimeout: "60s"},
		SDS:         noSDS(),
		Files: []bridgeFolder{{
			Dir:      d.DB.Dir,
			Layout:   layoutHelper,
			CertMode: "0644",
			KeyMode:  "0600",
			Owner:    d.PGUser.Owner(),
			OnRotate: []bridgeAction{action},
		}},
	}, d.PGUser)
}

// StartClientBridge starts the backend's bridge: its SVID in the SPIFFE
// layout.
func (d *dbStack) StartClientBridge(t *testing.T) *bridge {
	t.Helper()
	return startBridge(t, d.Work, "client", bridgeConfig{
		WorkloadAPI: bridgeWorkloadAPI{Address: d.SPIRE.WorkloadAPIAddr(), FirstUpdateTimeout: "60s"},
		SDS:         noSDS(),
		Files:       []bridgeFolder{{Dir: d.Client.Dir, Layout: layoutSPIFFE}},
	}, nil)
}

// WaitReady runs `sds-bridge wait` on f as u and fails unless it exits 0.
func (d *dbStack) WaitReady(t *testing.T, f folder, u *osUser) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	out, code := bridgeCLI(t, ctx, d.Work, u, "wait", "--dir", f.Dir, "--layout", f.Layout, "--timeout", "90s")
	if code != 0 {
		t.Fatalf("sds-bridge wait --dir %s: exit %d: %s", f.Dir, code, out)
	}
}

// Connect connects as the backend: client SVID from its folder per
// connection, server verified against the folder's bundle as the database.
func (d *dbStack) Connect(ctx context.Context) (pgConn, error) {
	return d.PG.Connect(ctx, d.Client.BundlePath(), d.Client, d.Client, d.DBID)
}

// TestPostgresPattern is the seed's second pattern across real rotations:
// PostgreSQL is never restarted, every connection succeeds, and the server
// certificate a client sees follows each rotation of the folder because the
// bridge reloads the server (SIGHUP via postmaster.pid) after every swap.
func TestPostgresPattern(t *testing.T) {
	for _, how := range []reloadBy{reloadBySignal, reloadByPostgres} {
		t.Run("reload by "+string(how), func(t *testing.T) { testPostgresPattern(t, how) })
	}
}

func testPostgresPattern(t *testing.T, how reloadBy) {
	d := newDBStack(t)
	dbBridge, clientBridge := d.StartDBBridge(t, how), d.StartClientBridge(t)
	d.WaitReady(t, d.DB, d.PGUser)
	d.WaitReady(t, d.Client, nil)
	d.PG.Start(t)
	checkKeyFile(t, d.DB, d.PGUser)

	pid, err := d.PG.PostmasterPID()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	const wantRotations = 3
	var (
		folderSerials []string // distinct leaf serials seen in the folder, in order
		serverSerials []string // distinct server serials seen by the client, in order
		clientSerials = map[string]bool{}
		startTime     time.Time
		conns         int
	)
	appendNew := func(list []string, s string) []string {
		if len(list) == 0 || list[len(list)-1] != s {
			return append(list, s)
		}
		return list
	}
	for len(serverSerials) < wantRotations+1 {
		if leaf, err := d.DB.Leaf(); err == nil {
			folderSerials = appendNew(folderSerials, leaf.SerialNumber.String())
		} else {
			t.Fatalf("read the database's folder: %v", err)
		}
		got, err := d.Connect(ctx)
		conns++
		if err != nil {
			t.Fatalf("connection %d failed (after server serials %v): %v", conns, serverSerials, err)
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
		serial := got.ServerSerial.String()
		if len(serverSerials) == 0 || serverSerials[len(serverSerials)-1] != serial {
			for _, s := range serverSerials {
				if s == serial {
					t.Fatalf("connection %d: the server went back to an older certificate (serial %s)", conns, serial)
				}
			}
			serverSerials = append(serverSerials, serial)
			t.Logf("connection %d: server serial %s (client serial %s)", conns, serial, got.ClientSerial)
		}
		clientSerials[got.ClientSerial] = true
		select {
		case <-ctx.Done():
			t.Fatalf("only %d server certificates in %d connections: %v", len(serverSerials), conns, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
	dbBridge.Running(t)
	clientBridge.Running(t)
	checkKeyFile(t, d.DB, d.PGUser)
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("postmaster %d is gone: %v", pid, err)
	}

	// Every certificate the server presented came from the folder, and
	// every rotation of the folder (but the newest, which may not have been
	// asked for yet) reached the server.
	inFolder := map[string]bool{}
	for _, s := range folderSerials {
		inFolder[s] = true
	}
	presented := map[string]bool{}
	for _, s := range serverSerials {
		presented[s] = true
		if !inFolder[s] {
			t.Errorf("server presented serial %s, never seen in the folder %v", s, folderSerials)
		}
	}
	for _, s := range folderSerials[:len(folderSerials)-1] {
		if !presented[s] {
			t.Errorf("folder serial %s never reached the server (server: %v)", s, serverSerials)
		}
	}
	// The backend's client certificate is read per connection too.
	if len(clientSerials) < 2 {
		t.Errorf("the server saw one client certificate in %d connections: the client did not follow its folder", conns)
	}
	t.Logf("%d connections, postmaster %d unchanged; server serials %d, client serials %d", conns, pid, len(serverSerials), len(clientSerials))
}

// checkKeyFile checks what PostgreSQL demands of ssl_key_file, through the
// stable name: a regular file owned by the server's user, mode 0600.
func checkKeyFile(t *testing.T, f folder, u *osUser) {
	t.Helper()
	for _, name := range []string{helperCert, helperKey, helperBundle} {
		link, err := isSymlink(filepath.Join(f.Dir, name))
		if err != nil || !link {
			t.Errorf("%s: want a symlink into the data dir (symlink=%v, %v)", name, link, err)
		}
	}
	fi, err := os.Stat(filepath.Join(f.Dir, helperKey))
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 || st.Uid != u.UID {
		t.Errorf("%s: mode %s uid %d, want a regular file 0600 owned by %s (%d)", helperKey, fi.Mode(), st.Uid, u.Name, u.UID)
	}
}

// TestStaleFolderFromPreviousPod is the seed's incident: the database's
// folder still holds what a previous pod left, a certificate and key from
// another CA whose NotAfter has passed. A PostgreSQL started on them serves
// them without a word, and the backend fails exactly as in the seed. With
// the bridge, `sds-bridge wait` returns only once fresh material is there,
// the leftovers are gone, and a PostgreSQL started after it accepts the
// first connection.
func TestStaleFolderFromPreviousPod(t *testing.T) {
	d := newDBStack(t)

	previousCA, err := devapi.NewCA(d.SPIRE.TrustDomain, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	stale, err := previousCA.IssueWith(d.DBID, time.Hour, devapi.SVIDOptions{NotBefore: now.Add(-3 * time.Hour), NotAfter: now.Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	writePlainFolder(t, d.DB, stale, previousCA.Bundle(), d.PGUser)
	staleCert, staleKey, err := stale.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	staleRoot := previousCA.Root().Raw

	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	// The leftovers are not ready material: check says so, and a short
	// wait gives up with a one-line reason.
	if out, code := bridgeCLI(t, ctx, d.Work, d.PGUser, "check", "--dir", d.DB.Dir, "--layout", layoutHelper); code == 0 {
		t.Fatalf("sds-bridge check accepted the previous pod's expired files: %s", out)
	} else {
		t.Logf("check on the leftovers: exit %d: %s", code, oneLine(out))
	}
	out, code := bridgeCLI(t, ctx, d.Work, d.PGUser, "wait", "--dir", d.DB.Dir, "--layout", layoutHelper, "--timeout", "2s")
	if code == 0 {
		t.Fatalf("sds-bridge wait returned 0 on the previous pod's expired files: %s", out)
	}
	if reason := bytes.TrimSpace([]byte(out)); len(reason) == 0 || bytes.Count(reason, []byte("\n")) > 0 {
		t.Errorf("wait timed out with %q, want a one-line reason", out)
	}
	t.Logf("wait on the leftovers: exit %d: %s", code, oneLine(out))

	// The seed's failure, reproduced: without the bridge the server
	// starts on the leftovers and the backend's first ping fails.
	d.StartClientBridge(t)
	d.WaitReady(t, d.Client, nil)
	d.PG.Start(t)
	if _, err := d.Connect(ctx); err == nil {
		t.Fatal("the backend accepted the previous pod's expired certificate")
	} else {
		t.Logf("without the bridge, as in the seed: %v", err)
	}
	d.PG.Stop(t)

	// A consumer waiting before the bridge starts is released only once
	// fresh material is in place.
	waiter := startBridgeWait(t, d.Work, "db", d.PGUser, "--dir", d.DB.Dir, "--layout", layoutHelper, "--timeout", "90s")
	dbBridge := d.StartDBBridge(t, reloadBySignal)
	if err := waiter.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if code := waiter.ExitCode(); code != 0 {
		t.Fatalf("sds-bridge wait exited %d: %s", code, tailFile(waiter.LogPath, 5))
	}
	t.Logf("wait released: %s", oneLine(tailFile(waiter.LogPath, 1)))

	// At that moment the folder holds the database's fresh SVID from
	// SPIRE and nothing of the previous pod.
	leaf, err := d.DB.Leaf()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify([]*x509.Certificate{leaf}, d.SPIRE.Bundle(t)); err != nil {
		t.Fatalf("the folder's certificate does not verify against SPIRE's bundle: %v", err)
	}
	if id, err := x509svid.IDFromCert(leaf); err != nil || id != d.DBID {
		t.Fatalf("the folder's certificate is %s (%v), want %s", id, err, d.DBID)
	}
	if n := time.Now(); n.Before(leaf.NotBefore) || n.After(leaf.NotAfter) {
		t.Fatalf("the folder's certificate is valid %s – %s, now %s", leaf.NotBefore, leaf.NotAfter, n)
	}
	for what, needle := range map[string][]byte{
		"certificate":   staleCert,
		"key":           staleKey,
		"CA root (DER)": staleRoot,
		"CA root (PEM)": pemOf(staleRoot),
	} {
		hits, err := findBytes(d.DB.Dir, needle)
		if err != nil {
			t.Fatal(err)
		}
		if len(hits) > 0 {
			t.Errorf("the previous pod's %s is still in %v", what, hits)
		}
	}
	checkKeyFile(t, d.DB, d.PGUser)
	if out, code := bridgeCLI(t, ctx, d.Work, nil, "check", "--dir", d.DB.Dir, "--layout", layoutHelper); code != 0 {
		t.Fatalf("sds-bridge check after wait: exit %d: %s", code, out)
	}

	// A PostgreSQL started now accepts the very first connection.
	d.PG.Start(t)
	got, err := d.Connect(ctx)
	if err != nil {
		t.Fatalf("first connection after the bridge: %v", err)
	}
	t.Logf("first connection ok: server %s serial %s", got.ServerID, got.ServerSerial)
	dbBridge.Running(t)
}

func pemOf(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
