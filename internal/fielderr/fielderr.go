// Package fielderr is the error a component's config validation returns
// for one refused field, keyed below the component's section ("key_mode");
// config puts the section in front ("files[1].key_mode"). It is not
// config's: config imports the components.
package fielderr

import (
	"errors"
	"fmt"
	"os"
)

// Error is one refused field.
type Error struct {
	// Key is the dotted key of the field ("on_rotate[0].signal.pid_file").
	Key string
	// Err is the message; Under prefixes the key of a clash's peer too.
	Err error
}

func (e *Error) Error() string { return e.Key + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// New is the error for key, with a message made as fmt.Errorf makes one.
func New(key, format string, args ...any) *Error {
	return &Error{Key: key, Err: fmt.Errorf(format, args...)}
}

// Clash is the error for key whose value clashes with the field at peer:
// the message is before, the peer's key, then after.
func Clash(key, peer, before, after string) *Error {
	return &Error{Key: key, Err: clash{before, peer, after}}
}

type clash struct{ before, peer, after string }

func (c clash) Error() string { return c.before + " " + c.peer + c.after }

// Under puts prefix in front of the key of err, or of each error err
// joins; an error that is not an *Error gets prefix as its key.
func Under(prefix string, err error) []error {
	if err == nil {
		return nil
	}
	var errs []error
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range joined.Unwrap() {
			errs = append(errs, Under(prefix, e)...)
		}
		return errs
	}
	var fe *Error
	if errors.As(err, &fe) && fe == err {
		out := &Error{Key: join(prefix, fe.Key), Err: fe.Err}
		if c, ok := fe.Err.(clash); ok {
			out.Err = clash{c.before, join(prefix, c.peer), c.after}
		}
		return []error{out}
	}
	return []error{&Error{Key: prefix, Err: err}}
}

func join(prefix, key string) string {
	switch {
	case prefix == "":
		return key
	case key == "" || key[0] == '[':
		return prefix + key
	}
	return prefix + "." + key
}

// List collects refused fields in order; Err joins them.
type List []error

// Add refuses key, with a message made as fmt.Errorf makes one.
func (l *List) Add(key, format string, args ...any) { *l = append(*l, New(key, format, args...)) }

// Clash refuses key for clashing with peer (see Clash).
func (l *List) Clash(key, peer, before, after string) {
	*l = append(*l, Clash(key, peer, before, after))
}

// Under adds err's refusals with prefix in front of their keys (see Under).
func (l *List) Under(prefix string, err error) { *l = append(*l, Under(prefix, err)...) }

// Err is nil for an empty List, else every refusal joined.
func (l List) Err() error { return errors.Join(l...) }

// FileMode checks the mode of a file the bridge writes, holding what:
// permission bits only, none of forbidden (why says what they would allow),
// readable by its owner.
func (l *List) FileMode(key, what string, m, forbidden os.FileMode, why string) {
	shown := fmt.Sprintf("%04o", uint32(m))
	switch {
	case m&^os.ModePerm != 0:
		l.Add(key, "%#o: only permission bits are allowed", uint32(m))
	case m&forbidden != 0:
		l.Add(key, "%q makes the %s %s", shown, what, why)
	case m&0o400 == 0:
		l.Add(key, "%q: the owner must be able to read the %s", shown, what)
	}
}
