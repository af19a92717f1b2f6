package admin

import (
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"
)

// WriteText prints st for a human (`sds-bridge status`); now is the
// reader's clock, for "in 5m" and "3s ago".
func (st Status) WriteText(w io.Writer, now time.Time) error {
	t := &text{now: now}
	t.header(st)
	t.identity(st)
	t.sinks(st.Sinks)
	t.folders(st.Folders)
	t.jwtSVIDs(st.JWTSVIDs)
	if st.SDS != nil {
		t.sds(st.SDS)
	}
	_, err := io.WriteString(w, t.b.String())
	return err
}

type text struct {
	b   strings.Builder
	now time.Time
}

// p prints one line, every string argument through printable: the
// document holds text clients chose, and one from afar may hold anything.
func (t *text) p(format string, args ...any) {
	for i, a := range args {
		if s, ok := a.(string); ok {
			args[i] = printable(s)
		}
	}
	fmt.Fprintf(&t.b, format+"\n", args...)
}

// table aligns a section's rows, cells through printable, then prints its
// details below (a line without tabs would end the alignment).
func (t *text) table(rows [][]string, details []string) {
	tw := tabwriter.NewWriter(&t.b, 0, 4, 2, ' ', 0)
	for _, r := range rows {
		cells := make([]string, len(r))
		for i, c := range r {
			cells[i] = printable(c)
		}
		fmt.Fprintln(tw, "  "+strings.Join(cells, "\t"))
	}
	tw.Flush()
	for _, d := range details {
		t.p("%s", d)
	}
}

func (t *text) header(st Status) {
	state := "READY"
	if !st.Ready {
		state = "NOT READY"
	}
	t.p("sds-bridge %s: %s, generation %d (received %s)", st.Version, state, st.Generation, ago(st.ReceivedAt, t.now))
	for _, pr := range st.Problems {
		t.p("  ! %s", pr)
	}
}

func (t *text) identity(st Status) {
	t.p("\nSVIDs")
	var rows [][]string
	for _, s := range st.SVIDs {
		def := ""
		if s.Default {
			def = "(default)"
		}
		rows = append(rows, []string{s.SPIFFEID, "serial " + s.Serial, "not after " + stamp(s.NotAfter) + " (" + left(s.NotAfter, t.now) + ")", def})
	}
	t.table(rows, nil)
	t.p("Bundles")
	rows = nil
	for _, bd := range st.Bundles {
		rows = append(rows, []string{bd.TrustDomain, plural(bd.Authorities, "root")})
	}
	t.table(rows, nil)
	if st.WorkloadAPI.Refused > 0 || st.WorkloadAPI.WatchErrors > 0 {
		t.p("Workload API: %d updates refused, %d watch errors since start", st.WorkloadAPI.Refused, st.WorkloadAPI.WatchErrors)
	}
}

func (t *text) sinks(sinks []SinkStatus) {
	t.p("\nSinks")
	var rows [][]string
	var details []string
	for _, s := range sinks {
		row := []string{s.Name, fmt.Sprintf("generation %d", s.Generation), "applied " + ago(s.AppliedAt, t.now),
			"delivery " + round(time.Duration(s.LatencySeconds*float64(time.Second))).String(), plural(int(s.Failures), "failure"), plural(int(s.Retries), "retry")}
		if s.Pending > 0 {
			row = append(row, fmt.Sprintf("generation %d pending", s.Pending))
		}
		rows = append(rows, row)
		switch {
		case !s.RetryingSince.IsZero():
			details = append(details, fmt.Sprintf("  %s: last apply failed, %s", s.Name,
				retryText(s.Pending, s.RetryingSince, int(s.Attempts), s.NextRetryAt, s.Error, t.now)))
		case s.Error != "":
			details = append(details, fmt.Sprintf("  %s: last apply failed: %s", s.Name, s.Error))
		}
	}
	t.table(rows, details)
}

func (t *text) folders(folders []FolderStatus) {
	if len(folders) > 0 {
		t.p("\nCredential folders")
	}
	for _, f := range folders {
		if m := f.Material; m != nil {
			t.p("  %s: generation %d, serial %s, not after %s (%s)", f.Dir, m.Generation, m.Serial, stamp(m.NotAfter), left(m.NotAfter, t.now))
		} else {
			t.p("  %s: NOT USABLE: %s", f.Dir, f.Problem)
		}
		if f.WriteFailures > 0 {
			t.p("    %d write failures since start; last error: %s", f.WriteFailures, orNone(f.LastWriteError))
		}
		for _, a := range f.Actions {
			t.action(a)
			if a.Running {
				t.p("      running for generation %d since %s (%s)", a.RunningGeneration, stamp(a.RunningSince), ago(a.RunningSince, t.now))
			}
		}
		if f.ReloadPending > 0 {
			t.p("    generation %d is swapped in; its reload actions wait for the running one", f.ReloadPending)
		}
	}
}

func (t *text) action(a ActionStatus) {
	switch a.State {
	case ActionNotRun:
		t.p("    %s: not run yet", a.Action)
	case ActionNoServer:
		t.p("    %s: no server to reload for generation %d (%s): it reads the files in place when it starts; %s since start: %s",
			a.Action, a.Generation, ago(a.At, t.now), plural(int(a.Failures), "failed attempt"), a.NoServer)
	case ActionOK:
		t.p("    %s: ok for generation %d (%s, %s); %s since start", a.Action, a.Generation, ago(a.At, t.now), plural(a.Attempts, "attempt"), plural(int(a.Failures), "failed attempt"))
	default:
		t.p("    %s: FAILED for generation %d after %s (%s); %s since start: %s",
			a.Action, a.Generation, plural(a.Attempts, "attempt"), ago(a.At, t.now), plural(int(a.Failures), "failed attempt"), a.Error)
	}
}

func (t *text) jwtSVIDs(jwts []JWTSVIDStatus) {
	if len(jwts) > 0 {
		t.p("\nJWT-SVID files")
	}
	for _, j := range jwts {
		path := filepath.Join(j.Dir, j.File)
		if j.LastRefresh.IsZero() {
			t.p("  %s: audience %q, NO TOKEN YET", path, j.Audience)
		} else {
			t.p("  %s: audience %q, %s, expires %s (%s), refreshed %s, next refresh %s",
				path, j.Audience, j.SPIFFEID, stamp(j.Expiry), left(j.Expiry, t.now), ago(j.LastRefresh, t.now), until(j.NextRefresh, t.now))
		}
		if j.LastError != "" {
			t.p("    refresh FAILING: %s since start, last %s: %s", plural(int(j.Failures), "failure"), ago(j.LastErrorAt, t.now), j.LastError)
		} else if j.Failures > 0 {
			t.p("    %s since start", plural(int(j.Failures), "failed refresh"))
		}
	}
}

func (t *text) sds(sds *SDSStatus) {
	t.p("\nSDS: version %s (generation %d), %s open, %s, %s", orNone(sds.Version), sds.Generation,
		plural(int(sds.StreamsOpen), "stream"), plural(int(sds.Pushes), "push"), plural(int(sds.NACKs), "NACK"))
	var rows [][]string
	var details []string
	for _, c := range sds.Clients {
		kind := "sotw"
		if c.Delta {
			kind = "delta"
		}
		node := c.Node
		if node == "" {
			node = "(no node id)"
		}
		acked := "nothing acknowledged yet"
		if c.AckedVersion != "" {
			acked = fmt.Sprintf("acknowledged generation %d (version %s, %s)", c.AckedGeneration, c.AckedVersion, ago(c.AckedAt, t.now))
		}
		validation := "validation " + c.Validation
		if c.ValidationReason != "" {
			validation += " (" + c.ValidationReason + ")"
		}
		rows = append(rows, []string{node, fmt.Sprintf("%s stream %d", kind, c.Stream), "connected " + ago(c.OpenedAt, t.now),
			subscription(c), validation, acked})
		if c.NACK != "" {
			details = append(details, fmt.Sprintf("  %s (%s stream %d) rejected version %s %s: %s", node, kind, c.Stream, c.NACKedVersion, ago(c.NACKedAt, t.now), c.NACK))
		}
	}
	t.table(rows, details)
	if sds.ClientsNotListed > 0 {
		t.p("  … and %s not listed (/status lists the oldest %d)", plural(sds.ClientsNotListed, "more stream"), len(sds.Clients))
	}
}

func subscription(c ClientStatus) string {
	switch {
	case c.Wildcard:
		return "every secret (wildcard)"
	case len(c.Subscribed) == 0:
		return "no secret"
	}
	return "asks for " + strings.Join(c.Subscribed, ", ")
}

func printableAll(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = printable(n)
	}
	return out
}

// printable escapes what a terminal would act on rather than show
// (control and format characters, invalid UTF-8) as Go escapes, so that
// text a client chose can neither forge lines nor restyle a terminal.
// Text with nothing to escape is returned without allocating.
func printable(s string) string {
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

// retryText says what a failed sink does about it, for /readyz and
// `sds-bridge status` alike.
func retryText(gen uint64, since time.Time, attempts int, next time.Time, lastErr string, now time.Time) string {
	when := "now"
	if d := next.Sub(now); !next.IsZero() && d > 0 {
		when = "in " + round(d).String()
	}
	return fmt.Sprintf("retrying generation %d since %s, %s, next %s, last error: %s",
		gen, stamp(since), plural(attempts, "attempt"), when, lastErr)
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// round keeps durations readable: whole seconds, or milliseconds below one.
func round(d time.Duration) time.Duration {
	if d > -time.Second && d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Second)
}

// plural is "1 attempt", "2 attempts", "3 pushes", "2 retries".
func plural(n int, what string) string {
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
	return round(now.Sub(t)).String() + " ago"
}

func until(t, now time.Time) string {
	if t.IsZero() {
		return "not scheduled"
	}
	if d := t.Sub(now); d > 0 {
		return "in " + round(d).String()
	}
	return "now"
}

func left(t, now time.Time) string {
	d := t.Sub(now)
	if d <= 0 {
		return "EXPIRED " + round(-d).String() + " ago"
	}
	return "in " + round(d).String()
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
