package filesink

import "strings"

// Reason says what is wrong with the material in a credential folder. Each
// Reason is also the error errors.Is matches: errors.Is(err, ErrExpired).
type Reason struct {
	name string // for logs and code: "expired"
	text string // for the error's message: "certificate expired"
}

func (r *Reason) Error() string  { return r.text }
func (r *Reason) String() string { return r.name }

// The reasons Inspect and checkSet tell apart.
var (
	// ErrMissing: a file is not there.
	ErrMissing = &Reason{"missing", "missing file"}
	// ErrMalformed: a file is not the PEM it should be.
	ErrMalformed = &Reason{"malformed", "malformed file"}
	// ErrNotYetValid: the leaf's NotBefore is in the future.
	ErrNotYetValid = &Reason{"not-yet-valid", "certificate not yet valid"}
	// ErrExpired: the leaf's NotAfter is in the past.
	ErrExpired = &Reason{"expired", "certificate expired"}
	// ErrExpiringSoon: the leaf expires within MinValidity.
	ErrExpiringSoon = &Reason{"expiring-soon", "certificate expires too soon"}
	// ErrKeyMismatch: the key is not the leaf's.
	ErrKeyMismatch = &Reason{"key-mismatch", "private key does not match certificate"}
	// ErrUntrusted: the chain does not verify against the bundle.
	ErrUntrusted = &Reason{"untrusted", "certificate chain does not verify against bundle"}
	// ErrUnreadable: a file is there but cannot be read (permissions).
	ErrUnreadable = &Reason{"unreadable", "file not readable"}
	// ErrOtherSVID: a valid set, but not of the SVID the folder is
	// configured for.
	ErrOtherSVID = &Reason{"other-svid", "folder holds another SVID than configured"}
)

// MaterialError is what Inspect returns when a folder is not usable. Its
// message is one line meant for an operator; Reason (or errors.Is with
// it) is meant for code.
type MaterialError struct {
	Reason *Reason
	// Path is the file the problem was found in.
	Path string
	// Detail is the one-line description, naming the file.
	Detail string
	// Err is the underlying cause, if any.
	Err error
}

func (e *MaterialError) Error() string { return e.Detail }

// Unwrap exposes both the Reason and the cause.
func (e *MaterialError) Unwrap() []error {
	if e.Err != nil {
		return []error{e.Reason, e.Err}
	}
	return []error{e.Reason}
}

// oneLine collapses every run of white space in s, newlines included, into
// one space: a cause that spans lines (a PEM parse error) must not break
// the Detail's one line.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
