package config

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// MaxID is the largest uid or gid chown can apply: 1<<32-1 is (uid_t)-1,
// which chown reads as "leave unchanged".
const MaxID = 1<<32 - 2

// ParseOwner reads "uid:gid" (numbers). Each id must be within 0..MaxID:
// a larger one would be truncated to 32 bits by chown, and
// "4294967296:0" would quietly mean root.
func ParseOwner(s string) (uid, gid int, err error) {
	u, g, ok := strings.Cut(s, ":")
	if !ok {
		return 0, 0, errors.New(`want "uid:gid", e.g. "999:999"`)
	}
	if uid, err = parseID(u); err != nil {
		return 0, 0, fmt.Errorf("uid %w", err)
	}
	if gid, err = parseID(g); err != nil {
		return 0, 0, fmt.Errorf("gid %w", err)
	}
	return uid, gid, nil
}

func parseID(s string) (int, error) {
	// ParseUint, not Atoi: no sign, and no wrap-around on 32-bit ints.
	v, err := strconv.ParseUint(s, 10, 64)
	switch {
	case err != nil && !errors.Is(err, strconv.ErrRange):
		return 0, fmt.Errorf("%q is not a number", s)
	case err != nil || v > MaxID:
		return 0, fmt.Errorf("%s is out of range: want 0 to %d", s, MaxID)
	}
	return int(v), nil
}

// Owner is an owner as ParseOwner reads it, for the flags that take one.
type Owner struct{ UID, GID int }

// String prints the owner as the config writes it.
func (o Owner) String() string { return fmt.Sprintf("%d:%d", o.UID, o.GID) }

// Signal is supervise.renew_signal, a signal name ("SIGHUP", "HUP"); 0 is
// unset and NoSignal is "none".
type Signal syscall.Signal

// NoSignal is "none": supervise.renew_signal sends nothing.
const NoSignal Signal = -1

// Signal is the signal to send; 0 for NoSignal (and unset).
func (s Signal) Signal() syscall.Signal {
	if s == NoSignal {
		return 0
	}
	return syscall.Signal(s)
}

// String prints the signal as the config names it.
func (s Signal) String() string {
	switch s {
	case NoSignal:
		return "none"
	case 0:
		return ""
	}
	for name, sig := range signals {
		if Signal(sig) == s {
			return name
		}
	}
	return syscall.Signal(s).String()
}

var signals = map[string]syscall.Signal{
	"SIGHUP": syscall.SIGHUP, "SIGINT": syscall.SIGINT, "SIGQUIT": syscall.SIGQUIT,
	"SIGTERM": syscall.SIGTERM, "SIGUSR1": syscall.SIGUSR1, "SIGUSR2": syscall.SIGUSR2,
}

// ParseSignal reads a signal name such as "SIGHUP" or "HUP".
func ParseSignal(s string) (syscall.Signal, error) {
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	sig, ok := signals[name]
	if !ok {
		return 0, errors.New("not one of SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2")
	}
	return sig, nil
}

// Mode is a file mode as the config writes it, an octal string ("0640"),
// never a decimal integer: spiffe-helper users have been bitten by
// cert_file_mode = 444.
type Mode os.FileMode

// ParseMode reads an octal permission string such as "0640".
func ParseMode(s string) (Mode, error) {
	v, err := strconv.ParseUint(strings.TrimPrefix(s, "0o"), 8, 32)
	if err != nil || v > 0o777 || v == 0 {
		return 0, fmt.Errorf("mode %q is not an octal permission between 0001 and 0777", s)
	}
	return Mode(v), nil
}

// String prints the mode as the config writes it.
func (m Mode) String() string { return fmt.Sprintf("%04o", uint32(m)) }
