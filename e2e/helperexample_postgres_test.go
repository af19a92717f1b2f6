//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// spiffe-helper's PostgreSQL example (examples/postgresql/helper.conf:
// only the agent address, the port in cmd_args and cert_dir changed) under
// `run --spiffe-helper-config` as the database's OS user, started before
// PostgreSQL as the README recommends. Its psql … pg_reload_conf() reload
// runs as the built-in postgres action, so the swaps before the server
// exists log no ERROR (psql failed three times each); once the server
// runs, the certificate it presents follows three rotations of the folder
// without a restart.
func TestSpiffeHelperPostgresExampleRunsUnchanged(t *testing.T) {
	start := time.Now()
	d := newExampleDBStack(t)
	work, s, pgUser := d.Work, d.SPIRE, d.PGUser
	helper := loadHelperExample(t, "postgresql/helper.conf")
	helper.Replace(t, "agent address", `"/tmp/spire-agent/public/api.sock"`, strconv.Quote(s.AgentSocket))
	helper.Replace(t, "port", "-p 5432", fmt.Sprintf("-p %d", d.PG.Port))
	helper.Replace(t, "path", `"/opt/spire/certs/postgresql"`, strconv.Quote(d.DB.Dir))
	helperPath := filepath.Join(work, "helper.conf")
	helper.Write(t, helperPath, nil)
	t.Logf("and PGHOST=%s in the bridge's environment (the server's socket directory, which psql would have needed too)", d.PG.Dir)
	b := startHelperBridge(t, work, "db", helperPath, pgUser, []string{"PGHOST=" + d.PG.Dir})
	d.StartClientBridge(t)

	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	// Two swaps with no server: each ran the reload and found nobody.
	if err := poll(ctx, "two swaps before PostgreSQL starts", 200*time.Millisecond, func() error {
		b.Running(t)
		if n := strings.Count(readFileString(b.proc.LogPath), "swapped in new generation"); n < 2 {
			return fmt.Errorf("%d swaps", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	d.PG.Start(t)
	d.WaitReady(t, d.Client, nil)
	pid, err := d.PG.PostmasterPID()
	if err != nil {
		t.Fatal(err)
	}
	serials := []string{d.serverMatchesFolder(t, ctx, "")}
	for len(serials) < 4 {
		serials = append(serials, d.serverMatchesFolder(t, ctx, serials[len(serials)-1]))
	}
	if now, err := d.PG.PostmasterPID(); err != nil || now != pid {
		t.Fatalf("postmaster PID %d (%v), was %d: the server was restarted", now, err, pid)
	}
	b.Running(t)
	log := readFileString(b.proc.LogPath)
	if strings.Contains(log, "level=ERROR") {
		t.Errorf("the bridge logged an ERROR:\n%s", grepLines(log, "level=ERROR"))
	}
	if !strings.Contains(log, "postgres:") {
		t.Errorf("the reload did not run as the postgres action")
	}
	t.Logf("postmaster %d presented %d certificates (3 rotations) %v; ERROR lines in the bridge's log: %d; test took %s",
		pid, len(serials), serials, strings.Count(log, "level=ERROR"), time.Since(start).Round(time.Second))
}

// newExampleDBStack is newDBStack with the example's file names
// (svid.key, not svid_key.pem) in the database's folder.
func newExampleDBStack(t *testing.T) *dbStack {
	t.Helper()
	requireBridge(t)
	_, pgUser := requirePostgres(t)
	work := newWorkDir(t)
	s := startSPIRE(t, work,
		spireEntry{Path: "/db", Selector: "unix:user:" + pgUser.Name},
		spireEntry{Path: "/backend", Selector: "unix:uid:0"},
	)
	d := &dbStack{
		Work: work, SPIRE: s, PGUser: pgUser,
		DB:     folder{Dir: filepath.Join(work, "db"), Layout: layoutHelper, TD: s.TrustDomain},
		Client: folder{Dir: filepath.Join(work, "client"), Layout: layoutSPIFFE, TD: s.TrustDomain},
		DBID:   s.ID("/db"), ClientID: s.ID("/backend"),
	}
	mkdirOwned(t, d.DB.Dir, 0o755, pgUser)
	mkdirOwned(t, d.Client.Dir, 0o755, nil)
	d.PG = initPostgres(t, work, pgTLSFiles{
		Cert: filepath.Join(d.DB.Dir, "svid.pem"), Key: filepath.Join(d.DB.Dir, "svid.key"), CA: filepath.Join(d.DB.Dir, "svid_bundle.pem"),
	})
	return d
}

// grepLines is the lines of s that contain what.
func grepLines(s, what string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, what) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
