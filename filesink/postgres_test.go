package filesink

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/sds-bridge/sds-bridge/internal/ca"
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
	dir, err := os.MkdirTemp("", "sbpg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	l, err := net.Listen("unix", filepath.Join(dir, ".s.PGSQL.5432"))
	if err != nil {
		t.Fatal(err)
	}
	s := &pgServer{t: t, dir: dir, l: l, answer: answer}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(func() {
		l.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
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
	a := PostgresAction{DSN: srv.dsn()}
	if err := a.Run(t.Context(), Event{Generation: 1}); err != nil {
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
			a := PostgresAction{DSN: dsn, Timeout: tc.timeout}
			err := a.Run(t.Context(), Event{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run() = %v, want an error containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error shows the password: %v", err)
			}
		})
	}
}

// Through a folder, the failures are retried, logged, counted and shown in
// Stats, and the password appears nowhere.
func TestPostgresActionInFolder(t *testing.T) {
	c := newCA(t, "example.org")
	srv := startPGServer(t, answerPermissionDenied)
	a := PostgresAction{DSN: srv.dsn()}
	f, logs := newFolder(t, Config{Actions: []Action{a}, ActionAttempts: 2, ActionBackoff: time.Millisecond})
	err := f.Apply(t.Context(), update(3, c.issue(t, ca.SVIDOptions{}), c.Bundle()))
	if !errors.Is(err, ErrReloadAction) {
		t.Fatalf("Apply() = %v, want ErrReloadAction", err)
	}
	if queries, _, _ := srv.seen(); len(queries) != 2 {
		t.Errorf("%d attempts reached the server, want 2", len(queries))
	}
	for what, text := range map[string]string{"error": err.Error(), "logs": logs.String()} {
		if strings.Contains(text, "s3cret") {
			t.Errorf("%s show the password:\n%s", what, text)
		}
	}
	st := f.Stats()
	if len(st.Actions) != 1 {
		t.Fatalf("Stats().Actions = %+v, want one", st.Actions)
	}
	got := st.Actions[0]
	if got.Action != a.Name() || got.Generation != 3 || got.Attempts != 2 || got.Failures != 2 || got.Err == nil {
		t.Errorf("action stats = %+v, want generation 3, 2 attempts, 2 failures, an error", got)
	}
	if st.WriteFailures != 0 || st.LastWriteErr != nil {
		t.Errorf("write stats = %d, %v; want none (the swap worked)", st.WriteFailures, st.LastWriteErr)
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
		if got := dsnPassword(tc.dsn); got != tc.password {
			t.Errorf("dsnPassword(%q) = %q, want %q", tc.dsn, got, tc.password)
		}
	}
}

func TestPostgresActionValidates(t *testing.T) {
	for _, tc := range []struct {
		a    PostgresAction
		want string
	}{
		{PostgresAction{}, "dsn must be set"},
		{PostgresAction{DSN: "just-a-host"}, "want keyword=value pairs"},
		{PostgresAction{DSN: "postgres://u:hunter22@db:bad port/x"}, "not a valid URL"},
		{PostgresAction{DSN: "host=db", Timeout: -time.Second}, "must not be negative"},
	} {
		_, err := New(Config{Dir: t.TempDir(), Actions: []Action{tc.a}})
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "hunter22") {
			t.Errorf("New with %+v: %v, want an error containing %q and no password", tc.a, err, tc.want)
		}
	}
}
