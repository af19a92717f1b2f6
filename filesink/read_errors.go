package filesink

import (
	"errors"
	"fmt"
	"strings"
)

// Reason says what is wrong with the material in a credential folder.
type Reason int

// The reasons Inspect and checkSet tell apart.
const (
	ReasonMissing      Reason = iota + 1 // a file is not there
	ReasonMalformed                      // a file is not the PEM it should be
	ReasonNotYetValid                    // the leaf's NotBefore is in the future
	ReasonExpired                        // the leaf's NotAfter is in the past
	ReasonExpiringSoon                   // the leaf expires within MinValidity
	ReasonKeyMismatch                    // the key is not the leaf's
	ReasonUntrusted                      // the chain does not verify against the bundle
	ReasonUnreadable                     // a file is there but cannot be read (permissions)
	ReasonOtherSVID                      // a valid set, but not of the SVID the folder is configured for
)

// Sentinel errors, one per Reason: errors.Is(err, ErrExpired).
var (
	ErrMissing      = errors.New("missing file")
	ErrMalformed    = errors.New("malformed file")
	ErrNotYetValid  = errors.New("certificate not yet valid")
	ErrExpired      = errors.New("certificate expired")
	ErrExpiringSoon = errors.New("certificate expires too soon")
	ErrKeyMismatch  = errors.New("private key does not match certificate")
	ErrUntrusted    = errors.New("certificate chain does not verify against bundle")
	ErrUnreadable   = errors.New("file not readable")
	ErrOtherSVID    = errors.New("folder holds another SVID than configured")
)

// reasons holds each Reason's name and sentinel, in Reason order.
var reasons = []struct {
	name     string
	sentinel error
}{
	ReasonMissing:      {"missing", ErrMissing},
	ReasonMalformed:    {"malformed", ErrMalformed},
	ReasonNotYetValid:  {"not-yet-valid", ErrNotYetValid},
	ReasonExpired:      {"expired", ErrExpired},
	ReasonExpiringSoon: {"expiring-soon", ErrExpiringSoon},
	ReasonKeyMismatch:  {"key-mismatch", ErrKeyMismatch},
	ReasonUntrusted:    {"untrusted", ErrUntrusted},
	ReasonUnreadable:   {"unreadable", ErrUnreadable},
	ReasonOtherSVID:    {"other-svid", ErrOtherSVID},
}

func (r Reason) known() bool { return r > 0 && int(r) < len(reasons) }

func (r Reason) String() string {
	if !r.known() {
		return fmt.Sprintf("Reason(%d)", int(r))
	}
	return reasons[r].name
}

// sentinel is the error errors.Is matches for r; nil for no known Reason.
func (r Reason) sentinel() error {
	if !r.known() {
		return nil
	}
	return reasons[r].sentinel
}

// MaterialError is what Inspect returns when a folder is not usable. Its
// message is one line meant for an operator; Reason (or errors.Is with the
// sentinel errors) is meant for code.
type MaterialError struct {
	Reason Reason
	// Path is the file the problem was found in.
	Path string
	// Detail is the one-line description, naming the file.
	Detail string
	// Err is the underlying cause, if any.
	Err error
}

func (e *MaterialError) Error() string { return e.Detail }

// oneLine collapses every run of white space in s, newlines included, into
// one space: a cause that spans lines (a PEM parse error) must not break
// the Detail's one line.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// Unwrap exposes both the Reason's sentinel and the cause.
func (e *MaterialError) Unwrap() []error {
	errs := []error{e.Reason.sentinel()}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}
