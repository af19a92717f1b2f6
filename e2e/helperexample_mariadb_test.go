//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// spiffe-helper's MySQL example (examples/mysql/helper.conf: paths and
// the agent address changed, and MariaDB's statement, FLUSH SSL, for
// MySQL 8's ALTER INSTANCE RELOAD TLS, which MariaDB refuses) under `run
// --spiffe-helper-config --owner <mysql>` as root, against MariaDB from
// Debian: after every swap the bridge runs the mysql client, and the
// server's Ssl_server_not_after follows each rotation of the folder
// (three at least), as read by a client that connects with its own SVID
// and --ssl-verify-server-cert; the server is never restarted.
func TestSpiffeHelperMySQLExampleRunsOnMariaDB(t *testing.T) {
	start := time.Now()
	for _, bin := range []string{"/usr/sbin/mariadbd", "/usr/bin/mariadb-install-db", "/usr/bin/mysql"} {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("%v (make e2e-deps installs MariaDB from Debian's packages)", err)
		}
	}
	mysqlUser, err := lookupUser("mysql")
	if err != nil {
		t.Fatal(err)
	}
	client := nobody(t)
	work := newWorkDir(t)
	s := startSPIRE(t, work)
	addEntry(t, s, "/mariadb", "unix:uid:0", "localhost")
	addEntry(t, s, "/mysql-user", "unix:uid:"+uidString(client.UID), "mysql-user")

	certs := filepath.Join(work, "certs")
	db := newMariaDB(t, work, mysqlUser, certs)
	helperPath := writeMySQLExample(t, work, s, certs)
	// The mysql client reads its socket from my.cnf ([client] socket),
	// which wins over $MYSQL_UNIX_PORT: the test's server is not at
	// Debian's /run/mysqld/mysqld.sock, so the bridge's user gets a
	// ~/.my.cnf naming the test's.
	writeFile(t, filepath.Join(work, "home", ".my.cnf"), []byte("[client]\nsocket="+db.Socket+"\n"), 0o600, nil)
	t.Logf("and on the command line: --owner %s (the server reads the key as user mysql); ~/.my.cnf [client] socket=%s", mysqlUser.Owner(), db.Socket)
	b := startHelperBridge(t, work, "mariadb", helperPath, nil, []string{"HOME=" + filepath.Join(work, "home")}, "--owner", mysqlUser.Owner())
	clientDir := startClientFolder(t, work, "mysql-user", s, client)

	server := filepath.Join(certs, "server-cert.pem")
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	if err := poll(ctx, "both folders", 200*time.Millisecond, func() error {
		b.Running(t)
		if _, err := parseCertsFile(filepath.Join(certs, "server-cert.pem")); err != nil {
			return err
		}
		_, err := parseCertsFile(filepath.Join(clientDir, helperCert))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	db.Start(t, ctx)
	if out, code, _ := runCmd(ctx, db.rootCmd("ALTER INSTANCE RELOAD TLS")); code == 0 {
		t.Errorf("MariaDB accepted MySQL's ALTER INSTANCE RELOAD TLS (%s): the example would need no change", oneLine(out))
	}
	db.rootSQL(t, ctx, "CREATE USER 'mysql-user'@'localhost' REQUIRE X509")
	pid := db.proc.PID()
	seen := followNotAfter(t, ctx, db, server, clientDir, client, 3)
	if db.proc.Exited() || db.proc.PID() != pid {
		t.Fatalf("the server (pid %d) did not stay up", pid)
	}
	t.Logf("mariadbd pid %d: Ssl_server_not_after followed %d rotations (%s); test took %s",
		pid, len(seen)-1, strings.Join(seen, ", "), time.Since(start).Round(time.Second))
}

// writeMySQLExample writes the example's helper.conf into work, changed in
// paths, the agent address and the statement, and returns its path.
func writeMySQLExample(t *testing.T, work string, s *spire, certs string) string {
	t.Helper()
	helper := loadHelperExample(t, "mysql/helper.conf")
	helper.Replace(t, "agent address", `"/tmp/spire-agent/public/api.sock"`, strconv.Quote(s.AgentSocket))
	helper.Replace(t, "path", `"/var/lib/mysql"`, strconv.Quote(certs))
	helper.Replace(t, "MariaDB's statement", `ALTER INSTANCE RELOAD TLS;`, `FLUSH SSL;`)
	path := filepath.Join(work, "helper.conf")
	helper.Write(t, path, nil)
	return path
}

// followNotAfter connects as the client (its SVID, --ssl-verify-server-cert)
// until Ssl_server_not_after has matched the folder's certificate for
// rotations+1 different certificates, and returns those NotAfters.
func followNotAfter(t *testing.T, ctx context.Context, db *mariaDB, server, clientDir string, client *osUser, rotations int) []string {
	t.Helper()
	var seen []string
	if err := poll(ctx, fmt.Sprintf("Ssl_server_not_after across %d rotations", rotations), 500*time.Millisecond, func() error {
		before, err := parseCertsFile(server)
		if err != nil {
			return err
		}
		out, code, err := runCmd(ctx, cmdSpec{Name: "mysql (client)", Path: "/usr/bin/mysql", User: client, Args: []string{
			"--no-defaults", "--protocol=tcp", "-h", "localhost", "-P", strconv.Itoa(db.Port), "-u", "mysql-user",
			"--ssl-ca", filepath.Join(clientDir, helperBundle), "--ssl-cert", filepath.Join(clientDir, helperCert),
			"--ssl-key", filepath.Join(clientDir, helperKey), "--ssl-verify-server-cert",
			"-N", "-B", "-e", "SHOW STATUS LIKE 'Ssl_server_not_after'"}})
		if err != nil || code != 0 {
			t.Fatalf("the client could not connect: exit %d %v: %s", code, err, out)
		}
		after, err := parseCertsFile(server)
		if err != nil {
			return err
		}
		_, value, _ := strings.Cut(strings.TrimSpace(out), "\t")
		notAfter, err := time.Parse("Jan _2 15:04:05 2006 MST", value)
		if err != nil {
			return fmt.Errorf("Ssl_server_not_after %q: %w", value, err)
		}
		if !before[0].Equal(after[0]) || !notAfter.Equal(after[0].NotAfter) {
			return fmt.Errorf("server's NotAfter %s, folder's %s", notAfter, after[0].NotAfter)
		}
		if v := notAfter.UTC().Format(time.TimeOnly); len(seen) == 0 || seen[len(seen)-1] != v {
			seen = append(seen, v)
		}
		if len(seen) < rotations+1 {
			return fmt.Errorf("followed %d rotations", len(seen)-1)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return seen
}

// mariaDB is a MariaDB server of the test's own, run as the mysql user,
// its TLS files in the bridge's folder.
type mariaDB struct {
	Dir, DataDir, Socket string
	Port                 int
	certs                string
	proc                 *proc
}

func newMariaDB(t *testing.T, work string, u *osUser, certs string) *mariaDB {
	t.Helper()
	dir := filepath.Join(work, "mariadb")
	mkdirOwned(t, dir, 0o755, u)
	db := &mariaDB{Dir: dir, DataDir: filepath.Join(dir, "data"), Socket: filepath.Join(dir, "mysqld.sock"), Port: freePort(t), certs: certs}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	mustRun(t, ctx, cmdSpec{Name: "mariadb-install-db", Path: "/usr/bin/mariadb-install-db", Dir: dir, Args: []string{
		"--no-defaults", "--user=mysql", "--datadir=" + db.DataDir, "--auth-root-authentication-method=socket", "--skip-test-db"}})
	return db
}

// Start runs mariadbd on the folder's files and waits until it answers.
func (db *mariaDB) Start(t *testing.T, ctx context.Context) {
	t.Helper()
	db.proc = startProc(t, cmdSpec{Name: "mariadbd", Path: "/usr/sbin/mariadbd", Dir: db.Dir, Args: []string{
		"--no-defaults", "--user=mysql", "--datadir=" + db.DataDir, "--socket=" + db.Socket,
		"--port=" + strconv.Itoa(db.Port), "--bind-address=127.0.0.1", "--pid-file=" + filepath.Join(db.Dir, "mariadbd.pid"),
		"--ssl-cert=" + filepath.Join(db.certs, "server-cert.pem"), "--ssl-key=" + filepath.Join(db.certs, "server-key.pem"),
		"--ssl-ca=" + filepath.Join(db.certs, "ca.pem"), "--log-error=" + filepath.Join(db.Dir, "error.log")}},
		filepath.Join(db.Dir, "mariadbd.out"))
	if err := poll(ctx, "MariaDB answering", 200*time.Millisecond, func() error {
		if db.proc.Exited() {
			t.Fatalf("mariadbd exited with %d:\n%s", db.proc.ExitCode(), tailFile(filepath.Join(db.Dir, "error.log"), 20))
		}
		out, code, err := runCmd(ctx, db.rootCmd("SELECT 1"))
		if err != nil || code != 0 {
			return fmt.Errorf("%d %v %s", code, err, oneLine(out))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// rootCmd runs sql as root over the server's socket.
func (db *mariaDB) rootCmd(sql string) cmdSpec {
	return cmdSpec{Name: "mysql (root)", Path: "/usr/bin/mysql", Dir: db.Dir, Args: []string{"--no-defaults", "--socket=" + db.Socket, "-e", sql}}
}

func (db *mariaDB) rootSQL(t *testing.T, ctx context.Context, sql string) {
	t.Helper()
	mustRun(t, ctx, db.rootCmd(sql))
}
