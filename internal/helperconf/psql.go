package helperconf

import (
	"path/filepath"
	"strings"
)

// psqlOptions are the psql options a reload command may use: the
// connection's (as the libpq keyword each sets), the command, and flags
// that take no value and change nothing about the connection.
var psqlOptions = map[string]string{
	"h": "host", "host": "host",
	"p": "port", "port": "port",
	"U": "user", "username": "user",
	"d": "dbname", "dbname": "dbname",
	"c": "command", "command": "command",
}

var psqlFlags = map[string]bool{
	"X": true, "no-psqlrc": true, "q": true, "quiet": true, "t": true, "tuples-only": true,
	"A": true, "no-align": true, "w": true, "no-password": true,
}

// psqlReloadDSN recognises spiffe-helper's PostgreSQL example (psql running
// SELECT pg_reload_conf()) and returns the libpq connection string psql
// would use; ok is false for anything else psql is given, such as another
// statement, an option the action cannot reproduce, or a DSN as dbname.
func psqlReloadDSN(cmd string, args []string) (dsn string, ok bool) {
	if filepath.Base(cmd) != "psql" {
		return "", false
	}
	kv := map[string]string{}
	var positional []string
	for i := 0; i < len(args); i++ {
		name, val, hasVal, opt := splitOption(args[i])
		if !opt {
			positional = append(positional, args[i])
			continue
		}
		if psqlFlags[name] && !hasVal {
			continue
		}
		key, known := psqlOptions[name]
		if !known {
			return "", false
		}
		if !hasVal {
			if i+1 == len(args) {
				return "", false
			}
			i++
			val = args[i]
		}
		if _, twice := kv[key]; twice {
			return "", false
		}
		kv[key] = val
	}
	for i, p := range positional { // psql [DBNAME [USERNAME]]
		key := []string{"dbname", "user", ""}[min(i, 2)]
		if _, set := kv[key]; key == "" || set {
			return "", false
		}
		kv[key] = p
	}
	if !isReloadStatement(kv["command"]) || strings.Contains(kv["dbname"], "=") || strings.Contains(kv["dbname"], "://") {
		return "", false
	}
	var parts []string
	for _, k := range []string{"host", "port", "user", "dbname"} {
		if v, set := kv[k]; set {
			parts = append(parts, k+"="+libpqQuote(v))
		}
	}
	if len(parts) == 0 {
		// libpq's own default; the action wants a keyword to tell a
		// connection string from nothing.
		parts = []string{"sslmode=prefer"}
	}
	return strings.Join(parts, " "), true
}

// splitOption reads "-p5432", "-p", "--port=5432" or "--port".
func splitOption(a string) (name, val string, hasVal, opt bool) {
	switch {
	case strings.HasPrefix(a, "--") && len(a) > 2:
		name, val, hasVal = strings.Cut(a[2:], "=")
		return name, val, hasVal, true
	case strings.HasPrefix(a, "-") && len(a) > 1:
		return a[1:2], a[2:], len(a) > 2, true
	}
	return "", "", false, false
}

// isReloadStatement: SELECT pg_reload_conf() and nothing else, in any case,
// with or without a semicolon.
func isReloadStatement(sql string) bool {
	s := strings.ToLower(strings.Join(strings.Fields(sql), " "))
	s = strings.TrimSpace(strings.TrimSuffix(s, ";"))
	return s == "select pg_reload_conf()"
}

// libpqQuote quotes a keyword value as libpq reads it, when it must be.
func libpqQuote(v string) string {
	if v != "" && !strings.ContainsAny(v, ` '\`) {
		return v
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}
