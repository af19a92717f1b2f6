package config

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"
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

// Owner is files[].owner, "uid:gid" in numbers, parsed when the YAML is
// decoded.
type Owner struct{ UID, GID int }

// UnmarshalYAML reads "uid:gid" (ParseOwner).
func (o *Owner) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return refuse(n, "owner: want \"uid:gid\", e.g. \"999:999\", not %s", describe(n))
	}
	uid, gid, err := ParseOwner(n.Value)
	if err != nil {
		return refuse(n, "%q: %v", n.Value, err)
	}
	*o = Owner{UID: uid, GID: gid}
	return nil
}

// String prints the owner as it is written in the config.
func (o Owner) String() string { return fmt.Sprintf("%d:%d", o.UID, o.GID) }

// Signal is a signal name ("SIGHUP", "HUP") parsed when the YAML is
// decoded; 0 is unset (the key's default applies) and NoSignal is "none".
type Signal syscall.Signal

// NoSignal is "none": supervise.renew_signal sends nothing.
const NoSignal Signal = -1

// UnmarshalYAML reads a name ParseSignal knows, or "none".
func (s *Signal) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return refuse(n, "signal: want a name such as SIGHUP, not %s", describe(n))
	}
	if strings.EqualFold(n.Value, "none") {
		*s = NoSignal
		return nil
	}
	sig, err := ParseSignal(n.Value)
	if err != nil {
		return refuse(n, "%q: %v (or none)", n.Value, err)
	}
	*s = Signal(sig)
	return nil
}

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

// Mode is a file mode written as an octal string ("0640"), never a decimal
// integer: spiffe-helper users have been bitten by cert_file_mode = 444.
type Mode os.FileMode

// UnmarshalYAML accepts only quoted octal strings.
func (m *Mode) UnmarshalYAML(n *yaml.Node) error {
	switch {
	case n.Kind != yaml.ScalarNode:
		return refuse(n, "mode: want a quoted octal string such as \"0640\", not %s", describe(n))
	case n.Tag != "!!str":
		return refuse(n, "mode %s must be a quoted octal string such as \"0640\"", n.Value)
	}
	v, err := ParseMode(n.Value)
	if err != nil {
		return refuse(n, "%v", err)
	}
	*m = v
	return nil
}

// ParseMode reads an octal permission string such as "0640".
func ParseMode(s string) (Mode, error) {
	v, err := strconv.ParseUint(strings.TrimPrefix(s, "0o"), 8, 32)
	if err != nil || v > 0o777 || v == 0 {
		return 0, fmt.Errorf("mode %q is not an octal permission between 0001 and 0777", s)
	}
	return Mode(v), nil
}

// String prints the mode as it is written in the config.
func (m Mode) String() string { return fmt.Sprintf("%04o", uint32(m)) }

// Duration is a time.Duration written as "30s", "5m".
type Duration time.Duration

// durationSyntax is what time.ParseDuration reads; a value that matches
// it and still fails to parse does not fit in a time.Duration.
var durationSyntax = regexp.MustCompile(`^[-+]?((\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h))+$`)

// UnmarshalYAML accepts Go duration strings.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return refuse(n, "duration: want a number with a unit, such as \"30s\" or \"2m\", not %s", describe(n))
	}
	v, err := time.ParseDuration(n.Value)
	switch {
	case err != nil && durationSyntax.MatchString(n.Value):
		return refuse(n, "duration %q is out of range: at most 2562047h (about 292 years)", n.Value)
	case err != nil:
		return refuse(n, "duration %q: want a number with a unit, such as \"30s\" or \"2m\"", n.Value)
	}
	*d = Duration(v)
	return nil
}

// String prints the duration as Go does.
func (d Duration) String() string { return time.Duration(d).String() }
