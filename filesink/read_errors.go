package filesink

import "strings"

// Reason says what is wrong with a folder's material; errors.Is matches it.
type Reason struct {
	name string // for logs and code: "expired"
	text string // for the error's message: "certificate expired"
}

func (r *Reason) Error() string  { return r.text }
func (r *Reason) String() string { return r.name }

// The reasons Inspect tells apart.
var (
	ErrMissing      = &Reason{"missing", "missing file"}
	ErrMalformed    = &Reason{"malformed", "malformed file"}
	ErrNotYetValid  = &Reason{"not-yet-valid", "certificate not yet valid"}
	ErrExpired      = &Reason{"expired", "certificate expired"}
	ErrExpiringSoon = &Reason{"expiring-soon", "certificate expires too soon"} // within MinValidity
	ErrKeyMismatch  = &Reason{"key-mismatch", "private key does not match certificate"}
	ErrUntrusted    = &Reason{"untrusted", "certificate chain does not verify against bundle"}
	ErrUnreadable   = &Reason{"unreadable", "file not readable"}
	ErrOtherSVID    = &Reason{"other-svid", "folder holds another SVID than configured"}
)

// MaterialError is Inspect's error: Detail, one line naming the file, for
// an operator; Reason for code.
type MaterialError struct {
	Reason *Reason
	Path   string // the file the problem was found in
	Detail string
	Err    error // the cause, if any
}

func (e *MaterialError) Error() string { return e.Detail }

func (e *MaterialError) Unwrap() []error {
	if e.Err != nil {
		return []error{e.Reason, e.Err}
	}
	return []error{e.Reason}
}

// oneLine collapses white space, newlines included: a cause that spans
// lines (a PEM parse error) must not break the Detail's one line.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
