// Package pgreload is the reload action that runs SELECT pg_reload_conf()
// on a PostgreSQL server. It is the only package that links pgx: only the
// wiring imports it.
package pgreload

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sds-bridge/sds-bridge/internal/fielderr"
	"github.com/sds-bridge/sds-bridge/reload"
)

// DefaultTimeout bounds an Action without a Timeout.
const DefaultTimeout = 10 * time.Second

// Action makes a PostgreSQL server reload its configuration (and its TLS
// files) with SELECT pg_reload_conf(), for pods where the bridge cannot
// signal it. The DSN may hold a password; it never appears in Name, logs
// or errors.
type Action struct {
	// DSN is a libpq connection string, keywords or a URL.
	DSN string `yaml:"dsn"`
	// Timeout bounds connecting and the query together; default 10 s.
	Timeout time.Duration `yaml:"timeout"`

	// answered is set once a connection succeeded: until then a refused
	// connection is reload.ErrNoServer (the server has not started yet),
	// after it a failure. nil remembers nothing.
	answered *atomic.Bool
}

// WithMemory implements reload.Rememberer.
func (a Action) WithMemory() reload.Action {
	a.answered = new(atomic.Bool)
	return a
}

// Limit bounds connecting and the query: Timeout, or DefaultTimeout.
func (a Action) Limit() time.Duration { return cmp.Or(a.Timeout, DefaultTimeout) }

// Name implements reload.Action; the password is redacted.
func (a Action) Name() string { return "postgres:" + RedactDSN(a.DSN) }

// Validate implements reload.Validator. It checks the DSN's shape only,
// never repeating it; the driver parses it when the action runs.
func (a Action) Validate() error {
	var errs fielderr.List
	switch {
	case strings.TrimSpace(a.DSN) == "":
		errs.Add("dsn", "missing: a libpq connection string, e.g. \"host=/var/run/postgresql user=postgres\"")
	case isURLDSN(a.DSN):
		if _, err := url.Parse(a.DSN); err != nil {
			// url's error quotes the whole input, password included.
			errs.Add("dsn", "not a valid postgres:// URL (value not shown: it may hold a password)")
		}
	case !strings.Contains(a.DSN, "="):
		errs.Add("dsn", "want keyword=value pairs or a postgres:// URL (value not shown: it may hold a password)")
	}
	if a.Timeout < 0 {
		errs.Add("timeout", "%s must not be negative", a.Timeout)
	}
	return errs.Err()
}

// Run connects, runs SELECT pg_reload_conf() and disconnects. The DSN is
// parsed here: it may name client certificates in the folder written.
func (a Action) Run(ctx context.Context, _ reload.Event) (err error) {
	shown, password := redact(a.DSN)
	where := "postgres action " + shown
	defer func() {
		if err != nil {
			err = redactError(err, password)
		}
	}()
	if err := a.Validate(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, a.Limit())
	defer cancel()

	cfg, err := pgx.ParseConfig(a.DSN)
	if err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	// One statement, no parameters: the simple protocol needs no prepare
	// round trip and also works through transaction-pooling proxies.
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		if noListener(err) && (a.answered == nil || !a.answered.Load()) {
			return fmt.Errorf("%s: %w (it has not answered yet): %w", where, reload.ErrNoServer, err)
		}
		return fmt.Errorf("%s: %w", where, err)
	}
	if a.answered != nil {
		a.answered.Store(true)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	var reloaded bool
	if err := conn.QueryRow(ctx, "SELECT pg_reload_conf()").Scan(&reloaded); err != nil {
		return fmt.Errorf("%s: SELECT pg_reload_conf(): %w", where, err)
	}
	if !reloaded {
		return fmt.Errorf("%s: pg_reload_conf() returned false: the server could not signal its postmaster", where)
	}
	return nil
}

// noListener: refused on TCP, or no socket file at a unix path.
func noListener(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT)
}

func isURLDSN(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

const redacted = "xxxxx"

// kvPassword matches password=… in a keyword/value DSN, quoted or not.
var kvPassword = regexp.MustCompile(`(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s]*)`)

// RedactDSN returns dsn with its password replaced by "xxxxx".
func RedactDSN(dsn string) string {
	shown, _ := redact(dsn)
	return shown
}

// redact is RedactDSN, and the password it replaced ("" when none).
func redact(dsn string) (shown, password string) {
	if !isURLDSN(dsn) {
		if m := kvPassword.FindStringSubmatch(dsn); m != nil {
			password = m[2]
		}
		if len(password) >= 2 && password[0] == '\'' && password[len(password)-1] == '\'' {
			password = strings.NewReplacer(`\'`, `'`, `\\`, `\`).Replace(password[1 : len(password)-1])
		}
		return kvPassword.ReplaceAllString(dsn, "${1}"+redacted), password
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return "postgres://(unparsable URL)", ""
	}
	password, _ = u.User.Password()
	if q := u.Query(); q.Has("password") {
		password = cmp.Or(password, q.Get("password"))
		q.Set("password", redacted)
		u.RawQuery = q.Encode()
	}
	return u.Redacted(), password
}

// redactedError hides a password a driver error echoes, keeping the chain.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// redactError returns err, or a copy whose text never contains password.
// Very short passwords are not searched for: that protects nothing.
func redactError(err error, password string) error {
	if len(password) < 4 || !strings.Contains(err.Error(), password) {
		return err
	}
	return &redactedError{msg: strings.ReplaceAll(err.Error(), password, redacted), err: err}
}
