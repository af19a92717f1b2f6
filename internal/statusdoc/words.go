package statusdoc

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Printable escapes what a terminal would act on rather than show —
// control characters (escape sequences, newlines, tabs), format
// characters such as bidi overrides, invalid UTF-8 — as Go escapes
// (\x1b, \n, \u202e), so that text a client chose (an SDS node id, a
// NACK's detail) can neither forge lines nor restyle an operator's
// terminal. Printable text is returned as is, without allocating.
func Printable(s string) string {
	if !strings.ContainsFunc(s, needsEscape) && utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case needsEscape(r):
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

func needsEscape(r rune) bool { return r != ' ' && !unicode.IsPrint(r) }

// RetryText says what a sink that failed does about it: "retrying
// generation 7 since 2026-…Z, 4 attempts, next in 8s, last error: …".
// /readyz and `sds-bridge status` say it alike.
func RetryText(gen uint64, since time.Time, attempts int, next time.Time, lastErr string, now time.Time) string {
	when := "now"
	if d := next.Sub(now); !next.IsZero() && d > 0 {
		when = "in " + Round(d).String()
	}
	return fmt.Sprintf("retrying generation %d since %s, %s, next %s, last error: %s",
		gen, Stamp(since), Plural(attempts, "attempt"), when, lastErr)
}

// Stamp is t in UTC, RFC 3339.
func Stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// Round keeps durations readable: whole seconds, or milliseconds below one.
func Round(d time.Duration) time.Duration {
	if d > -time.Second && d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Second)
}

// Plural is "1 attempt", "2 attempts", "3 pushes", "2 retries".
func Plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	if strings.HasSuffix(what, "sh") {
		return fmt.Sprintf("%d %ses", n, what)
	}
	if strings.HasSuffix(what, "ry") {
		return fmt.Sprintf("%d %sies", n, strings.TrimSuffix(what, "y"))
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func ago(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return Round(now.Sub(t)).String() + " ago"
}

func until(t, now time.Time) string {
	if t.IsZero() {
		return "not scheduled"
	}
	if d := t.Sub(now); d > 0 {
		return "in " + Round(d).String()
	}
	return "now"
}

func left(t, now time.Time) string {
	d := t.Sub(now)
	if d <= 0 {
		return "EXPIRED " + Round(-d).String() + " ago"
	}
	return "in " + Round(d).String()
}

func seconds(s float64) string {
	return Round(time.Duration(s * float64(time.Second))).String()
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
