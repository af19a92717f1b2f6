package config

import (
	"slices"
	"syscall"
	"testing"
)

// A supervise block parses, defaults to SIGHUP and restart never, and
// "none" turns the renew signal off.
func TestSuperviseParsesAndDefaults(t *testing.T) {
	c, err := parseDefaultValidate(t, "files:\n  - dir: /certs\nsupervise:\n  command: [postgres, -D, /data]\n")
	if err != nil {
		t.Fatal(err)
	}
	sv := c.Supervise
	if !sv.On() || !slices.Equal(sv.Command, []string{"postgres", "-D", "/data"}) || sv.RenewSignal != Signal(syscall.SIGHUP) || sv.Restart != "never" {
		t.Fatalf("supervise = %+v, want the command, SIGHUP, never", sv)
	}
	if sig := sv.RenewSignal.Signal(); sig != syscall.SIGHUP {
		t.Fatalf("Signal() = %v", sig)
	}
	c, err = parseDefaultValidate(t, "files:\n  - dir: /certs\nsupervise:\n  command: [mosquitto]\n  renew_signal: none\n  restart: on-failure\n")
	if err != nil {
		t.Fatal(err)
	}
	if sig := c.Supervise.RenewSignal.Signal(); sig != 0 || c.Supervise.Restart != "on-failure" {
		t.Fatalf("Signal() = %v; restart %q", sig, c.Supervise.Restart)
	}
	c, err = parseDefaultValidate(t, "files:\n  - dir: /certs\n")
	if err != nil || c.Supervise.On() || c.Supervise.RenewSignal != 0 {
		t.Fatalf("no supervise block: %+v, %v", c.Supervise, err)
	}
}

// Bad supervise values are refused by key and value.
func TestSuperviseBadValuesAreRefusedByKey(t *testing.T) {
	checkErrors(t, []errorCase{
		{"signal", "files:\n  - dir: /a\nsupervise:\n  command: [x]\n  renew_signal: SIGFOO\n", []string{"supervise.renew_signal", `"SIGFOO"`}},
		{"restart", "files:\n  - dir: /a\nsupervise:\n  command: [x]\n  restart: always\n", []string{"supervise.restart", `"always"`, "on-failure"}},
		{"empty program", "files:\n  - dir: /a\nsupervise:\n  command: [\"\"]\n", []string{"supervise.command[0]"}},
		{"signal, supervision off", "files:\n  - dir: /a\nsupervise:\n  renew_signal: HUPP\n", []string{"supervise.renew_signal", `"HUPP"`}},
		{"unknown key", "files:\n  - dir: /a\nsupervise:\n  cmd: [x]\n", []string{"cmd"}},
	})
}
