//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// The names of the login test, as in deploy/kubernetes: the first DNS name
// of a client workload's entry becomes its SVID's subject CN, and
// pg_ident.conf maps exactly that name to a role.
const (
	loginRole      = "app"
	loginAllowedCN = "backend.demo.svc.cluster.local"  // workload A: mapped to app
	loginOtherCN   = "frontend.demo.svc.cluster.local" // workload B: same trust domain, not mapped
	loginDBDNS     = "postgres.demo.svc.cluster.local" // the database's own entry
)

// loginWorkload is one client workload: its entry, the OS user its bridge
// runs as (the entry's unix:uid selector) and the folder that bridge writes.
type loginWorkload struct {
	Name   string
	Path   string
	DNS    []string
	User   *osUser // nil: the suite's own uid (root)
	Folder folder
}

// TestPostgresLoginsPerWorkload maps SPIFFE identities to PostgreSQL roles
// through the subject CN, as deploy/kubernetes does: the real agent issues
// SVIDs for entries with -dns names, PostgreSQL uses
// `cert clientname=CN map=spiffe` and pg_ident.conf maps
// backend.demo.svc.cluster.local to app. Workload A (that first DNS name)
// logs in as app and only as app; workload B (another DNS name) and
// workload C (no DNS name, so no CN) of the same trust domain are refused;
// the database's own SVID, written by its bridge and reloaded by SIGHUP,
// rotates at least twice, and after each rotation A still logs in and B and
// C are still refused.
func TestPostgresLoginsPerWorkload(t *testing.T) {
	requireBridge(t)
	binDir, pgUser := requirePostgres(t)
	nobody, err := lookupUser("nobody")
	if err != nil {
		t.Fatal(err)
	}
	daemon, err := lookupUser("daemon")
	if err != nil {
		t.Fatal(err)
	}
	work := newWorkDir(t)
	s := startSPIRE(t, work) // entries below carry -dns, which spireEntry has not
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()

	dbID := s.ID("/ns/demo/sa/postgres")
	createEntryWithDNS(t, ctx, s, dbID, "unix:user:"+pgUser.Name, loginDBDNS)
	wl := []*loginWorkload{
		{Name: "A", Path: "/ns/demo/sa/backend", DNS: []string{loginAllowedCN, "backend.demo.svc", "backend"}},
		{Name: "B", Path: "/ns/demo/sa/frontend", DNS: []string{loginOtherCN, "frontend.demo.svc", "frontend"}, User: nobody},
		{Name: "C", Path: "/ns/demo/sa/batch", User: daemon},
	}
	for _, w := range wl {
		uid := uint32(os.Getuid())
		if w.User != nil {
			uid = w.User.UID
		}
		createEntryWithDNS(t, ctx, s, s.ID(w.Path), "unix:uid:"+uidString(uid), w.DNS...)
		// spiffe-helper layout: svid.pem and svid_key.pem are what libpq's
		// sslcert and sslkey take.
		w.Folder = folder{Dir: filepath.Join(work, "client-"+w.Name), Layout: layoutHelper, TD: s.TrustDomain}
		mkdirOwned(t, w.Folder.Dir, 0o755, w.User)
	}

	dbDir := folder{Dir: filepath.Join(work, "db"), Layout: layoutHelper, TD: s.TrustDomain}
	mkdirOwned(t, dbDir.Dir, 0o755, pgUser)
	pg := initPostgres(t, work, pgTLSFiles{
		Cert: filepath.Join(dbDir.Dir, helperCert),
		Key:  filepath.Join(dbDir.Dir, helperKey),
		CA:   filepath.Join(dbDir.Dir, helperBundle),
	})
	// The mapping of deploy/kubernetes/base/postgres.yaml, in place of the
	// suite's "any SVID as postgres".
	writeFile(t, filepath.Join(pg.DataDir, "pg_hba.conf"), []byte(`# e2e logins: the login name is the SVID's subject CN (its entry's first DNS name)
hostssl all all 127.0.0.1/32 cert clientname=CN map=spiffe
local all postgres peer
`), 0o600, pgUser)
	writeFile(t, filepath.Join(pg.DataDir, "pg_ident.conf"), []byte(fmt.Sprintf(`# MAPNAME SYSTEM-USERNAME (CN) PG-USERNAME
spiffe %s %s
`, loginAllowedCN, loginRole)), 0o600, pgUser)

	startBridge(t, work, "db", bridgeConfig{
		WorkloadAPI: bridgeWorkloadAPI{Address: s.WorkloadAPIAddr(), FirstUpdateTimeout: "60s"},
		SDS:         noSDS(),
		Files: []bridgeFolder{{
			Dir: dbDir.Dir, Layout: layoutHelper, CertMode: "0644", KeyMode: "0600", Owner: pgUser.Owner(),
			OnRotate: []bridgeAction{{Signal: &bridgeSignal{PIDFile: pg.PIDFile(), Signal: "SIGHUP"}}},
		}},
	}, pgUser)
	for _, w := range wl {
		startBridge(t, work, "client-"+w.Name, bridgeConfig{
			WorkloadAPI: bridgeWorkloadAPI{Address: s.WorkloadAPIAddr(), FirstUpdateTimeout: "60s"},
			SDS:         noSDS(),
			Files:       []bridgeFolder{{Dir: w.Folder.Dir, Layout: layoutHelper}},
		}, w.User)
	}
	waitFolder := func(f folder, u *osUser) {
		t.Helper()
		out, code := bridgeCLI(t, ctx, work, u, "wait", "--dir", f.Dir, "--layout", f.Layout, "--timeout", "90s")
		if code != 0 {
			t.Fatalf("sds-bridge wait --dir %s: exit %d: %s", f.Dir, code, out)
		}
	}
	waitFolder(dbDir, pgUser)
	for _, w := range wl {
		waitFolder(w.Folder, w.User)
	}

	// What SPIRE issued: the first DNS name is the subject CN; no DNS
	// name, no CN.
	for _, w := range wl {
		leaf, err := w.Folder.Leaf()
		if err != nil {
			t.Fatal(err)
		}
		id, err := x509svid.IDFromCert(leaf)
		if err != nil || id != s.ID(w.Path) {
			t.Fatalf("workload %s: folder holds %s (%v), want %s", w.Name, id, err, s.ID(w.Path))
		}
		wantCN := ""
		if len(w.DNS) > 0 {
			wantCN = w.DNS[0]
		}
		if leaf.Subject.CommonName != wantCN || !slices.Equal(leaf.DNSNames, w.DNS) {
			t.Fatalf("workload %s: subject %q, DNS SANs %q; want CN %q and DNS SANs %q", w.Name, leaf.Subject, leaf.DNSNames, wantCN, w.DNS)
		}
		t.Logf("workload %s: %s, subject %q, DNS SANs %q", w.Name, id, leaf.Subject, leaf.DNSNames)
	}

	pg.Start(t)
	mustRun(t, ctx, cmdSpec{Name: "psql", Path: filepath.Join(binDir, "psql"), User: pgUser, Dir: pg.Dir,
		Args: []string{"-X", "-v", "ON_ERROR_STOP=1", "-d", pg.LocalDSN(), "-c", "CREATE ROLE " + loginRole + " LOGIN"}})

	a, b, c := wl[0], wl[1], wl[2]
	// libpq, as a real client would: sslcert/sslkey/sslrootcert straight
	// from A's folder, re-read per connection. verify-ca, not verify-full:
	// the server's SVID names 127.0.0.1 nowhere (the SPIFFE ID check is
	// the pgx logins' below).
	if out, code, err := runCmd(ctx, psqlAs(binDir, pg, a, loginRole)); err != nil || code != 0 || strings.TrimSpace(out) != loginRole {
		t.Fatalf("libpq: workload A as %s: exit %d %v: %s", loginRole, code, err, out)
	}
	if out, code, err := runCmd(ctx, psqlAs(binDir, pg, b, loginRole)); err != nil || code == 0 || !strings.Contains(out, "certificate authentication failed") {
		t.Fatalf("libpq: workload B as %s: exit %d %v, want refused with \"certificate authentication failed\": %s", loginRole, code, err, out)
	} else {
		t.Logf("libpq: workload B refused: %s", oneLine(out))
	}

	const wantRotations = 2
	var serverSerials []string
	var logins int
	folderSerials := map[string]bool{} // the database's folder, sampled before each login
	clientSerials := map[string]bool{} // A's certificate as the server saw it
	for len(serverSerials) < wantRotations+1 {
		if leaf, err := dbDir.Leaf(); err == nil {
			folderSerials[leaf.SerialNumber.String()] = true
		} else {
			t.Fatalf("read the database's folder: %v", err)
		}
		got, err := loginAs(ctx, pg, a.Folder, loginRole, dbID)
		logins++
		if err != nil {
			t.Fatalf("login %d: workload A as %s after server serials %v: %v", logins, loginRole, serverSerials, err)
		}
		if got.User != loginRole || !strings.Contains(got.ClientDN, "CN="+loginAllowedCN) {
			t.Fatalf("login %d: workload A is %q with client DN %q", logins, got.User, got.ClientDN)
		}
		clientSerials[got.ClientSerial] = true
		serial := got.ServerSerial.String()
		if len(serverSerials) > 0 && serverSerials[len(serverSerials)-1] == serial {
			time.Sleep(250 * time.Millisecond)
			continue
		}
		if slices.Contains(serverSerials, serial) {
			t.Fatalf("login %d: the server went back to serial %s", logins, serial)
		}
		serverSerials = append(serverSerials, serial)
		t.Logf("login %d: server serial %s; A is %s (client DN %q, serial %s)", logins, serial, got.User, got.ClientDN, got.ClientSerial)
		// Under each server certificate: A only as its role, B and C not at all.
		for _, try := range []struct {
			w    *loginWorkload
			role string
		}{{a, "postgres"}, {b, loginRole}, {b, "postgres"}, {c, loginRole}, {c, "postgres"}} {
			_, err := loginAs(ctx, pg, try.w.Folder, try.role, dbID)
			if err == nil {
				t.Fatalf("workload %s logged in as %s", try.w.Name, try.role)
			}
			if !strings.Contains(err.Error(), "certificate authentication failed") {
				t.Fatalf("workload %s as %s: %v, want \"certificate authentication failed\"", try.w.Name, try.role, err)
			}
			if len(serverSerials) == 1 {
				t.Logf("workload %s as %s refused: %v", try.w.Name, try.role, err)
			}
		}
	}
	t.Logf("%d logins of A; server serials %v; A's client serials %d", logins, serverSerials, len(clientSerials))
	for _, serial := range serverSerials {
		if !folderSerials[serial] {
			t.Errorf("the server presented serial %s, never seen in its bridge's folder", serial)
		}
	}

	// The server says why: B's CN has no line in the map, C has no CN.
	logData, err := os.ReadFile(pg.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		fmt.Sprintf(`no match in usermap "spiffe" for user "%s" authenticated as "%s"`, loginRole, loginOtherCN),
		fmt.Sprintf(`certificate authentication failed for user "%s": client certificate contains no user name`, loginRole),
		fmt.Sprintf(`connection authorized: user=%s`, loginRole),
	} {
		if !strings.Contains(string(logData), want) {
			t.Errorf("server log lacks %q", want)
		}
	}
}

// createEntryWithDNS registers id for selector with DNS names, in order:
// SPIRE puts the first into the SVID's subject CN.
func createEntryWithDNS(t *testing.T, ctx context.Context, s *spire, id spiffeid.ID, selector string, dns ...string) {
	t.Helper()
	args := []string{"entry", "create", "-parentID", s.agentID().String(), "-spiffeID", id.String(),
		"-selector", selector, "-x509SVIDTTL", strconv.Itoa(x509SVIDTTL)}
	for _, d := range dns {
		args = append(args, "-dns", d)
	}
	mustRun(t, ctx, s.serverCmd(args...))
}

// psqlAs runs `SELECT current_user` with libpq as w's own OS user (libpq
// wants the key owned by the user running it, or by root), TLS files
// from w's folder.
func psqlAs(binDir string, pg *postgres, w *loginWorkload, role string) cmdSpec {
	f := w.Folder
	dsn := fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=postgres sslmode=verify-ca sslrootcert=%s sslcert=%s sslkey=%s connect_timeout=10",
		pg.Port, role, f.BundlePath(), filepath.Join(f.Dir, helperCert), filepath.Join(f.Dir, helperKey))
	return cmdSpec{Name: "psql", Path: filepath.Join(binDir, "psql"), Dir: pg.Dir, User: w.User,
		Args: []string{"-X", "-A", "-t", "-d", dsn, "-c", "SELECT current_user"}}
}

// loginResult is what one login saw.
type loginResult struct {
	User         string // current_user
	ClientDN     string // pg_stat_ssl.client_dn
	ClientSerial string
	ServerSerial *big.Int
}

// loginAs logs in as role with pgx: the client SVID from f on every
// handshake, the server verified against f's bundle and required to be
// serverID (sslmode=verify-full with the host name check replaced by a
// SPIFFE ID check).
func loginAs(ctx context.Context, pg *postgres, f folder, role string, serverID spiffeid.ID) (loginResult, error) {
	var res loginResult
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=postgres sslmode=verify-full sslrootcert=%s connect_timeout=10",
		pg.Port, role, f.BundlePath()))
	if err != nil {
		return res, err
	}
	tlsCfg := tlsconfig.MTLSClientConfig(f, f, tlsconfig.AuthorizeID(serverID))
	tlsCfg.VerifyConnection = func(cs tls.ConnectionState) error {
		res.ServerSerial = new(big.Int).Set(cs.PeerCertificates[0].SerialNumber)
		return nil
	}
	cfg.TLSConfig = tlsCfg
	cfg.Fallbacks = nil
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return res, err
	}
	defer conn.Close(context.Background())
	var dn, serial *string
	if err := conn.QueryRow(ctx, `SELECT current_user::text, s.client_dn, s.client_serial::text
		FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()`).Scan(&res.User, &dn, &serial); err != nil {
		return res, err
	}
	if dn != nil {
		res.ClientDN = *dn
	}
	if serial != nil {
		res.ClientSerial = *serial
	}
	return res, nil
}
