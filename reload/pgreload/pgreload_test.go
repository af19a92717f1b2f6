package pgreload

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/goleak"

	"github.com/sds-bridge/sds-bridge/internal/testkit"
	"github.com/sds-bridge/sds-bridge/reload"
)

// The real PostgreSQL (pg_reload_conf() making the server re-read its
// certificate) is exercised by the e2e suite; here the action talks the
// PostgreSQL wire protocol to a server built on pgx's own pgproto3 backend
// over a real unix socket, which answers the way PostgreSQL does.

const bridgePassword = "s3cret pass'word"

// pgAnswer is how the protocol server answers SELECT pg_reload_conf().
type pgAnswer int

const (
	answerTrue pgAnswer = iota
	answerFalse
	answerPermissionDenied
	answerNever // accept, then say nothing
)

type pgServer struct {
	t      *testing.T
	dir    string // the DSN's host: PostgreSQL's socket directory
	l      net.Listener
	answer pgAnswer
	wg     sync.WaitGroup

	mu        sync.Mutex
	conns     []net.Conn
	queries   []string
	users     []string
	passwords []string
}

func startPGServer(t *testing.T, answer pgAnswer) *pgServer {
	t.Helper()
	return startPGServerIn(t, pgSocketDir(t), answer)
}

// pgSocketDir is a short directory for a server's socket (unix socket
// paths are limited to ~104 bytes).
func pgSocketDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sbpg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// startPGServerIn listens at dir/.s.PGSQL.5432, as PostgreSQL does with
// unix_socket_directories = dir.
func startPGServerIn(t *testing.T, dir string, answer pgAnswer) *pgServer {
	t.Helper()
	l, err := net.Listen("unix", filepath.Join(dir, ".s.PGSQL.5432"))
	if err != nil {
		t.Fatal(err)
	}
	s := &pgServer{t: t, dir: dir, l: l, answer: answer}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(s.stop)
	return s
}

// stop closes the listener (which removes the socket file) and every
// connection, as a server that exits.
func (s *pgServer) stop() {
	s.l.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *pgServer) accept() {
	defer s.wg.Done()
	for {
		c, err := s.l.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns = append(s.conns, c)
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			if err := s.serve(c); err != nil {
				s.t.Logf("pg server: %v", err)
			}
		}()
	}
}

// serve speaks just enough of the protocol: startup, cleartext password,
// simple queries, terminate.
func (s *pgServer) serve(c net.Conn) error {
	be := pgproto3.NewBackend(c, c)
	msg, err := be.ReceiveStartupMessage()
	if err != nil {
		return err
	}
	startup, ok := msg.(*pgproto3.StartupMessage)
	if !ok {
		return fmt.Errorf("startup: got %T", msg)
	}
	be.Send(&pgproto3.AuthenticationCleartextPassword{})
	if err := be.Flush(); err != nil {
		return err
	}
	if err := be.SetAuthType(pgproto3.AuthTypeCleartextPassword); err != nil {
		return err
	}
	msg, err = be.Receive()
	if err != nil {
		return err
	}
	pw, ok := msg.(*pgproto3.PasswordMessage)
	if !ok {
		return fmt.Errorf("password: got %T", msg)
	}
	s.mu.Lock()
	s.users = append(s.users, startup.Parameters["user"])
	s.passwords = append(s.passwords, pw.Password)
	s.mu.Unlock()
	be.Send(&pgproto3.AuthenticationOk{})
	// What PostgreSQL reports at start-up and pgx relies on.
	for name, value := range map[string]string{"server_version": "15.0", "standard_conforming_strings": "on", "client_encoding": "UTF8"} {
		be.Send(&pgproto3.ParameterStatus{Name: name, Value: value})
	}
	be.Send(&pgproto3.BackendKeyData{ProcessID: 4242, SecretKey: []byte{0, 0, 0, 7}})
	be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	if err := be.Flush(); err != nil {
		return err
	}
	for {
		msg, err := be.Receive()
		if err != nil {
			return nil // the client hung up
		}
		switch m := msg.(type) {
		case *pgproto3.Terminate:
			return nil
		case *pgproto3.Query:
			s.mu.Lock()
			s.queries = append(s.queries, m.String)
			s.mu.Unlock()
			switch s.answer {
			case answerNever:
				continue
			case answerPermissionDenied:
				be.Send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "42501", Message: "permission denied for function pg_reload_conf"})
			default:
				value := "t"
				if s.answer == answerFalse {
					value = "f"
				}
				be.Send(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{
					Name: []byte("pg_reload_conf"), DataTypeOID: 16, DataTypeSize: 1, TypeModifier: -1,
				}}})
				be.Send(&pgproto3.DataRow{Values: [][]byte{[]byte(value)}})
				be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")})
			}
			be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
			if err := be.Flush(); err != nil {
				return err
			}
		default:
			return fmt.Errorf("unexpected %T", msg)
		}
	}
}

func (s *pgServer) seen() (queries, users, passwords []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.queries...), append([]string(nil), s.users...), append([]string(nil), s.passwords...)
}

// dsn has a quoted password with a space and a quote in it.
func (s *pgServer) dsn() string {
	return fmt.Sprintf(`host=%s port=5432 user=bridge dbname=postgres sslmode=disable password='s3cret pass\'word'`, s.dir)
}

func TestPostgresActionReloads(t *testing.T) {
	srv := startPGServer(t, answerTrue)
	a := Action{DSN: srv.dsn()}
	if err := a.Run(t.Context(), reload.Event{Generation: 1}); err != nil {
		t.Fatal(err)
	}
	queries, users, passwords := srv.seen()
	if len(queries) != 1 || queries[0] != "SELECT pg_reload_conf()" {
		t.Errorf("queries = %q, want one SELECT pg_reload_conf()", queries)
	}
	if len(users) != 1 || users[0] != "bridge" || passwords[0] != bridgePassword {
		t.Errorf("logged in as %q with %q, want bridge with the DSN's password", users, passwords)
	}
	if strings.Contains(a.Name(), "s3cret") || !strings.Contains(a.Name(), "password=xxxxx") {
		t.Errorf("Name() = %q, want the password redacted", a.Name())
	}
}

func TestPostgresActionFailures(t *testing.T) {
	unused, err := os.MkdirTemp("", "sbpg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(unused) })

	for _, tc := range []struct {
		name    string
		answer  pgAnswer
		noSrv   bool
		timeout time.Duration
		want    string
	}{
		{name: "returns false", answer: answerFalse, want: "pg_reload_conf() returned false"},
		{name: "permission denied", answer: answerPermissionDenied, want: "permission denied for function pg_reload_conf (SQLSTATE 42501)"},
		{name: "server not there", noSrv: true, want: "failed to connect"},
		{name: "server never answers", answer: answerNever, timeout: 200 * time.Millisecond, want: "SELECT pg_reload_conf()"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dsn := fmt.Sprintf(`host=%s user=bridge sslmode=disable password='s3cret pass\'word'`, unused)
			if !tc.noSrv {
				dsn = startPGServer(t, tc.answer).dsn()
			}
			a := Action{DSN: dsn, Timeout: tc.timeout}
			err := a.Run(t.Context(), reload.Event{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run() = %v, want an error containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error shows the password: %v", err)
			}
		})
	}
}

// Through a runner, the failures are retried, logged, counted and shown in
// Stats, and the password appears nowhere.
func TestPostgresActionInFolder(t *testing.T) {
	srv := startPGServer(t, answerPermissionDenied)
	a := Action{DSN: srv.dsn()}
	r, logs := newRunner(t, reload.Config{Actions: []reload.Action{a}, Attempts: 2, Backoff: time.Millisecond})
	err := r.Run(t.Context(), reload.Event{Generation: 3})
	if err == nil {
		t.Fatalf("Run() = %v, want the failure", err)
	}
	if queries, _, _ := srv.seen(); len(queries) != 2 {
		t.Errorf("%d attempts reached the server, want 2", len(queries))
	}
	for what, text := range map[string]string{"error": err.Error(), "logs": logs.String()} {
		if strings.Contains(text, "s3cret") {
			t.Errorf("%s show the password:\n%s", what, text)
		}
	}
	st := r.Stats()
	if len(st) != 1 {
		t.Fatalf("Stats() = %+v, want one", st)
	}
	got := st[0]
	if got.Action != a.Name() || got.Generation != 3 || got.Attempts != 2 || got.Failures != 2 || got.Err == nil {
		t.Errorf("action stats = %+v, want generation 3, 2 attempts, 2 failures, an error", got)
	}
}

func TestRedactDSN(t *testing.T) {
	for _, tc := range []struct{ dsn, want, password string }{
		{"host=/run/postgresql user=postgres", "host=/run/postgresql user=postgres", ""},
		{"host=db password=hunter22 user=x", "host=db password=xxxxx user=x", "hunter22"},
		{"host=db PASSWORD = 'a b\\'c' user=x", "host=db PASSWORD = xxxxx user=x", "a b'c"},
		{"postgres://u:hunter22@db:5432/app?sslmode=verify-full", "postgres://u:xxxxx@db:5432/app?sslmode=verify-full", "hunter22"},
		{"postgresql://u@db/app?password=hunter22", "postgresql://u@db/app?password=xxxxx", "hunter22"},
	} {
		if got := RedactDSN(tc.dsn); got != tc.want {
			t.Errorf("RedactDSN(%q) = %q, want %q", tc.dsn, got, tc.want)
		}
		if _, got := redact(tc.dsn); got != tc.password {
			t.Errorf("redact(%q) password = %q, want %q", tc.dsn, got, tc.password)
		}
	}
}

func TestPostgresActionValidates(t *testing.T) {
	for _, tc := range []struct {
		a    Action
		want string
	}{
		{Action{}, "dsn: missing"},
		{Action{DSN: "just-a-host"}, "want keyword=value pairs"},
		{Action{DSN: "postgres://u:hunter22@db:bad port/x"}, "not a valid postgres:// URL"},
		{Action{DSN: "host=db", Timeout: -time.Second}, "must not be negative"},
	} {
		_, err := reload.New(reload.Config{Actions: []reload.Action{tc.a}})
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "hunter22") {
			t.Errorf("New with %+v: %v, want an error containing %q and no password", tc.a, err, tc.want)
		}
	}
}

// pgDSN is a DSN for a server whose socket is (or will be) in dir.
func pgDSN(dir string) string {
	return fmt.Sprintf(`host=%s port=5432 user=bridge dbname=postgres sslmode=disable password='s3cret pass\'word'`, dir)
}

// Nothing listening where the DSN points, before the server ever answered,
// is no server to reload: a socket file nobody listens on (refused), no
// socket file, a closed TCP port. The action says reload.ErrNoServer, and through
// a runner it is tried once, not counted, and Run succeeds.
func TestPostgresActionNoServerBeforeItEverAnswered(t *testing.T) {
	refusedDir := pgSocketDir(t)
	l, err := net.Listen("unix", filepath.Join(refusedDir, ".s.PGSQL.5432"))
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := tcp.Addr().(*net.TCPAddr).Port
	tcp.Close()

	for _, tc := range []struct{ name, dsn, want string }{
		{"socket file, nobody listening", pgDSN(refusedDir), "connection refused"},
		{"no socket file", pgDSN(pgSocketDir(t)), "no such file or directory"},
		{"closed TCP port", fmt.Sprintf("host=127.0.0.1 port=%d user=bridge sslmode=disable password=hunter22", port), "connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Action{DSN: tc.dsn, Timeout: 5 * time.Second}.Run(t.Context(), reload.Event{})
			if !errors.Is(err, reload.ErrNoServer) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run() = %v, want reload.ErrNoServer and %q", err, tc.want)
			}

			r, logs := newRunner(t, reload.Config{Actions: []reload.Action{Action{DSN: tc.dsn}}, Attempts: 3, Backoff: time.Millisecond})
			if err := r.Run(t.Context(), reload.Event{Generation: 1}); err != nil {
				t.Fatalf("Run() = %v, want no error: there is no server to reload", err)
			}
			a := r.Stats()[0]
			if !a.NoServer() || a.Failed() || a.Attempts != 1 || a.Failures != 0 || a.Generation != 1 {
				t.Errorf("action stats = %+v, want no server for generation 1 after 1 attempt, no failure", a)
			}
			if strings.Contains(logs.String(), "reload action failed") || !strings.Contains(logs.String(), "no server to reload") {
				t.Errorf("logs:\n%s\nwant one no-server line and no failure", logs.String())
			}
		})
	}
}

// Once the server answered, a refused connection means it went away: a
// failure, retried and returned, as any reload that does not happen.
func TestPostgresActionRefusedAfterItAnsweredIsAFailure(t *testing.T) {
	dir := pgSocketDir(t)
	action := Action{DSN: pgDSN(dir)}
	r, _ := newRunner(t, reload.Config{Actions: []reload.Action{action}, Attempts: 2, Backoff: time.Millisecond})
	apply := func(gen uint64) error {
		return r.Run(t.Context(), reload.Event{Generation: gen})
	}

	if err := apply(1); err != nil {
		t.Fatalf("generation 1, server not started yet: Run() = %v, want no error", err)
	}
	if a := r.Stats()[0]; !a.NoServer() {
		t.Fatalf("generation 1: action stats = %+v, want no server", a)
	}

	srv := startPGServerIn(t, dir, answerTrue)
	if err := apply(2); err != nil {
		t.Fatalf("generation 2, server up: Run() = %v", err)
	}
	if q, _, _ := srv.seen(); len(q) != 1 {
		t.Fatalf("generation 2: the server saw %q, want one reload", q)
	}

	srv.stop()
	err := apply(3)
	if err == nil || errors.Is(err, reload.ErrNoServer) || !strings.Contains(err.Error(), "gave up after 2 attempts") {
		t.Fatalf("generation 3, server gone: Run() = %v, want a reload failure after 2 attempts", err)
	}
	if a := r.Stats()[0]; !a.Failed() || a.NoServer() || a.Failures != 2 || a.Generation != 3 {
		t.Errorf("generation 3: action stats = %+v, want failed twice", a)
	}

	// The same value in another folder's runner has that runner's memory:
	// the server never answered there.
	other, _ := newRunner(t, reload.Config{Actions: []reload.Action{action}})
	if err := other.Run(t.Context(), reload.Event{Generation: 4}); err != nil {
		t.Errorf("a second folder whose server never answered: Run() = %v, want no server", err)
	}
}

// newRunner makes a reload.Runner for cfg, logging to the returned buffer
// (and to the test log on failure).
func newRunner(t testing.TB, cfg reload.Config) (*reload.Runner, *testkit.LogBuffer) {
	t.Helper()
	logs := &testkit.LogBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r, err := reload.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("reload logs:\n%s", logs.String())
		}
	})
	return r, logs
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
