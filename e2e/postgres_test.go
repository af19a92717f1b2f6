//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// pgServerUser is the OS account the database runs as: PostgreSQL refuses
// to run as root. Debian's package creates it.
const pgServerUser = "postgres"

var (
	pgSetupOnce sync.Once
	pgBinDir    string
	pgUser      *osUser
	pgSetupErr  error
)

// requirePostgres finds the server binaries and the OS account, creating
// the account when it is missing. The binaries come from Debian's
// postgresql package (see README.md); they are not on PATH there.
func requirePostgres(t testing.TB) (binDir string, u *osUser) {
	t.Helper()
	requireRoot(t)
	pgSetupOnce.Do(func() {
		pgBinDir, pgSetupErr = findPostgresBinDir()
		if pgSetupErr != nil {
			return
		}
		pgUser, pgSetupErr = lookupUser(pgServerUser)
		if pgSetupErr == nil {
			return
		}
		out, err := exec.Command("useradd", "--system", "--user-group", "--home-dir", "/nonexistent",
			"--shell", "/usr/sbin/nologin", pgServerUser).CombinedOutput()
		if err != nil {
			pgSetupErr = fmt.Errorf("e2e: useradd %s: %w: %s", pgServerUser, err, out)
			return
		}
		pgUser, pgSetupErr = lookupUser(pgServerUser)
	})
	if pgSetupErr != nil {
		t.Fatal(pgSetupErr)
	}
	return pgBinDir, pgUser
}

func findPostgresBinDir() (string, error) {
	var candidates []string
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		candidates = append(candidates, strings.TrimSpace(string(out)))
	}
	globbed, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	// Newest major version first: "9.6" < "15" compares wrong as strings.
	sort.Slice(globbed, func(i, j int) bool { return pgMajor(globbed[i]) > pgMajor(globbed[j]) })
	candidates = append(candidates, globbed...)
	for _, dir := range candidates {
		if isExecutable(filepath.Join(dir, "initdb")) && isExecutable(filepath.Join(dir, "pg_ctl")) {
			return dir, nil
		}
	}
	return "", errors.New("e2e: PostgreSQL server binaries (initdb, pg_ctl) not found via `pg_config --bindir` or /usr/lib/postgresql/*/bin: install them with `apt-get install -y postgresql` (see e2e/README.md)")
}

func pgMajor(binDir string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
	return v
}

// pgTLSFiles are the server's ssl_cert_file, ssl_key_file and ssl_ca_file.
type pgTLSFiles struct {
	Cert, Key, CA string
}

// postgres is one PostgreSQL cluster in a test's work dir.
type postgres struct {
	BinDir  string
	User    *osUser
	Dir     string // owned by the server's user
	DataDir string
	Port    int
	LogPath string
	pid     int // postmaster PID while running
}

// initPostgres runs initdb and writes the configuration: TLS from files
// (which need not exist yet: the server reads them at start), loopback only,
// and a client certificate required on every TCP connection.
func initPostgres(t testing.TB, workDir string, files pgTLSFiles) *postgres {
	t.Helper()
	binDir, u := requirePostgres(t)
	dir := filepath.Join(workDir, "pg")
	mkdirOwned(t, dir, 0o755, u)
	p := &postgres{
		BinDir:  binDir,
		User:    u,
		Dir:     dir,
		DataDir: filepath.Join(dir, "data"),
		Port:    freePort(t),
		LogPath: filepath.Join(dir, "postgres.log"),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	mustRun(t, ctx, p.cmd("initdb", "-D", p.DataDir, "-U", "postgres", "--auth=trust",
		"--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"))

	// Appended settings win over initdb's defaults.
	conf := fmt.Sprintf(`
# e2e
listen_addresses = '127.0.0.1'
port = %d
unix_socket_directories = '%s'
ssl = on
ssl_cert_file = '%s'
ssl_key_file = '%s'
ssl_ca_file = '%s'
fsync = off
log_connections = on
`, p.Port, dir, files.Cert, files.Key, files.CA)
	appendFile(t, filepath.Join(p.DataDir, "postgresql.conf"), conf)

	// PostgreSQL cannot match a URI SAN, and SPIFFE SVIDs carry no CN (the
	// `cert` method's default user name source). So `cert` takes the user
	// name from the whole subject DN (clientname=DN, PostgreSQL ≥ 14) and
	// the map lets any subject log in as postgres: what authenticates the
	// client is its certificate verifying against ssl_cert_file's trust
	// bundle, i.e. any SVID of the trust domain. Authorizing one SPIFFE ID
	// would need a check PostgreSQL does not have.
	writeFile(t, filepath.Join(p.DataDir, "pg_hba.conf"), []byte(`# e2e: TCP needs TLS and a client certificate; the local socket is for nothing here.
hostssl all all 127.0.0.1/32 cert clientname=DN map=spiffe
# The database's own bridge (same OS user) reloads the server with pg_reload_conf().
local all postgres peer
`), 0o600, u)
	writeFile(t, filepath.Join(p.DataDir, "pg_ident.conf"), []byte(`# e2e: any subject DN of a verified SVID may log in as postgres
spiffe /^.*$ postgres
`), 0o600, u)
	return p
}

func appendFile(t testing.TB, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("e2e: append to %s: %v", path, err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatalf("e2e: append to %s: %v", path, err)
	}
}

func (p *postgres) cmd(tool string, args ...string) cmdSpec {
	return cmdSpec{Name: tool, Path: filepath.Join(p.BinDir, tool), Args: args, Dir: p.Dir, User: p.User}
}

// PIDFile is postmaster.pid: the bridge's `signal` reload action reads it.
func (p *postgres) PIDFile() string { return filepath.Join(p.DataDir, "postmaster.pid") }

// LocalDSN reaches the server over its unix socket as the postgres role, for
// a client running as the server's OS user (peer authentication).
func (p *postgres) LocalDSN() string {
	return fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres sslmode=disable", p.Dir, p.Port)
}

// Start starts the server with pg_ctl and waits until it accepts
// connections. The server is stopped when the test ends.
func (p *postgres) Start(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, code, err := runCmd(ctx, p.cmd("pg_ctl", "start", "-w", "-t", "60", "-D", p.DataDir, "-l", p.LogPath))
	t.Cleanup(func() {
		p.Stop(t)
		if t.Failed() {
			t.Logf("---- tail of postgres (%s) ----\n%s", p.LogPath, tailFile(p.LogPath, 60))
		}
	})
	if err != nil || code != 0 {
		t.Fatalf("e2e: pg_ctl start: exit %d %v:\n%s\n---- server log ----\n%s", code, err, out, tailFile(p.LogPath, 30))
	}
	pid, err := p.PostmasterPID()
	if err != nil {
		t.Fatal(err)
	}
	p.pid = pid
}

// PostmasterPID reads the PID from postmaster.pid.
func (p *postgres) PostmasterPID() (int, error) {
	data, err := os.ReadFile(p.PIDFile())
	if err != nil {
		return 0, fmt.Errorf("e2e: read postmaster.pid: %w", err)
	}
	first, _, _ := strings.Cut(string(data), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		return 0, fmt.Errorf("e2e: postmaster.pid: %w", err)
	}
	return pid, nil
}

// Stop stops the server (fast shutdown); if pg_ctl cannot, it kills the
// postmaster by the PID recorded at start.
func (p *postgres) Stop(t testing.TB) {
	if p.pid == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, code, err := runCmd(ctx, p.cmd("pg_ctl", "stop", "-w", "-m", "fast", "-D", p.DataDir))
	if err != nil || code != 0 {
		t.Logf("e2e: pg_ctl stop: exit %d %v: %s; killing postmaster %d", code, err, oneLine(out), p.pid)
		_ = syscall.Kill(p.pid, syscall.SIGKILL)
	}
	p.pid = 0
}

// pgConn is what one connection saw.
type pgConn struct {
	ServerSerial *big.Int // serial of the server's leaf certificate
	ServerID     spiffeid.ID
	BackendPID   int
	StartTime    time.Time // pg_postmaster_start_time()
	SSL          bool      // pg_stat_ssl.ssl of the session
	ClientSerial string    // pg_stat_ssl.client_serial: what the server saw
}

// Connect opens one connection as the seed's backend did, with pgx and
// sslmode=verify-full, and closes it. svids gives the client certificate per
// handshake (read from the client's credential folder), bundles verifies
// the server's chain, and the server must present serverID: SVIDs carry only
// a URI SAN, so the host name check of verify-full is replaced by a SPIFFE ID
// check.
func (p *postgres) Connect(ctx context.Context, rootCertFile string, svids x509svid.Source, bundles x509bundle.Source, serverID spiffeid.ID) (pgConn, error) {
	var seen pgConn
	connString := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=verify-full sslrootcert=%s connect_timeout=10",
		p.Port, rootCertFile)
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		return seen, fmt.Errorf("e2e: pgx config: %w", err)
	}
	var tlsCfg *tls.Config
	if svids != nil {
		tlsCfg = tlsconfig.MTLSClientConfig(svids, bundles, tlsconfig.AuthorizeID(serverID))
	} else {
		tlsCfg = tlsconfig.TLSClientConfig(bundles, tlsconfig.AuthorizeID(serverID))
	}
	tlsCfg.VerifyConnection = func(cs tls.ConnectionState) error {
		leaf := cs.PeerCertificates[0]
		seen.ServerSerial = leaf.SerialNumber
		id, err := x509svid.IDFromCert(leaf)
		if err != nil {
			return err
		}
		seen.ServerID = id
		return nil
	}
	cfg.TLSConfig = tlsCfg
	cfg.Fallbacks = nil
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return seen, fmt.Errorf("e2e: connect to PostgreSQL: %w", err)
	}
	defer conn.Close(context.Background())
	var clientSerial *string
	err = conn.QueryRow(ctx, `SELECT pg_backend_pid(), pg_postmaster_start_time(), s.ssl, s.client_serial::text
		FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()`).Scan(&seen.BackendPID, &seen.StartTime, &seen.SSL, &clientSerial)
	if err != nil {
		return seen, fmt.Errorf("e2e: query PostgreSQL: %w", err)
	}
	if clientSerial != nil {
		seen.ClientSerial = *clientSerial
	}
	return seen, nil
}
