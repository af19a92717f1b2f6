package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sds-bridge/sds-bridge/folderstate"
	"github.com/sds-bridge/sds-bridge/internal/oneline"
	"github.com/sds-bridge/sds-bridge/reload"
)

// Status is the JSON document of /status: what every consumer has and
// when it expires. Times are RFC 3339; absent times are left out.
type Status struct {
	Version     string            `json:"version"`
	Time        time.Time         `json:"time"`
	Ready       bool              `json:"ready"`
	Problems    []string          `json:"problems,omitempty"`
	Generation  uint64            `json:"generation"`
	ReceivedAt  time.Time         `json:"received_at,omitzero"`
	SVIDs       []SVIDStatus      `json:"svids"`
	Bundles     []BundleStatus    `json:"bundles"`
	WorkloadAPI WorkloadAPIStatus `json:"workload_api"`
	Sinks       []SinkStatus      `json:"sinks"`
	Folders     []FolderStatus    `json:"folders"`
	// JWTSVIDs are the JWT-SVID files of every folder, in config order.
	JWTSVIDs []JWTSVIDStatus `json:"jwt_svids"`
	// SDS is absent when the bridge serves no SDS.
	SDS *SDSStatus `json:"sds,omitempty"`
}

// SVIDStatus is one SVID of the current generation.
type SVIDStatus struct {
	SPIFFEID  string    `json:"spiffe_id"`
	Default   bool      `json:"default"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	Hint      string    `json:"hint,omitempty"`
}

// BundleStatus is one trust domain's bundle.
type BundleStatus struct {
	TrustDomain string `json:"trust_domain"`
	Authorities int    `json:"authorities"`
}

// WorkloadAPIStatus counts what came from the Workload API and was not used.
type WorkloadAPIStatus struct {
	Refused     uint64 `json:"refused_updates"`
	WatchErrors uint64 `json:"watch_errors"`
}

// SinkStatus is what one sink did with the newest generation.
type SinkStatus struct {
	Name           string    `json:"name"`
	Generation     uint64    `json:"generation"`
	Pending        uint64    `json:"pending,omitempty"`
	AppliedAt      time.Time `json:"applied_at,omitzero"`
	TookSeconds    float64   `json:"took_seconds"`
	LatencySeconds float64   `json:"latency_seconds"`
	Failures       uint64    `json:"failures"`
	Error          string    `json:"error,omitempty"`
	// RetryingSince, Attempts and NextRetryAt are set while the sink
	// retries Pending after failed applies; Error is the last one's.
	RetryingSince time.Time `json:"retrying_since,omitzero"`
	Attempts      uint64    `json:"attempts,omitempty"`
	NextRetryAt   time.Time `json:"next_retry_at,omitzero"`
	// Retries counts applies since start that repeated a failed one.
	Retries uint64 `json:"retries"`
}

// FolderStatus is what is on disk in one credential folder.
type FolderStatus struct {
	Dir string `json:"dir"`
	// Material is the valid set found, or Problem says why there is none.
	Material       *MaterialStatus `json:"material,omitempty"`
	Problem        string          `json:"problem,omitempty"`
	WriteFailures  uint64          `json:"write_failures"`
	LastWriteError string          `json:"last_write_error,omitempty"`
	Actions        []ActionStatus  `json:"actions"`
}

// JWTSVIDStatus is one JWT-SVID file: the token it holds and how its
// refresh goes.
type JWTSVIDStatus struct {
	Dir      string `json:"dir"`
	File     string `json:"file"`
	Audience string `json:"audience"`
	// SPIFFEID, Expiry and LastRefresh are the token written last;
	// absent before the first.
	SPIFFEID    string    `json:"spiffe_id,omitempty"`
	Expiry      time.Time `json:"expiry,omitzero"`
	LastRefresh time.Time `json:"last_refresh,omitzero"`
	NextRefresh time.Time `json:"next_refresh,omitzero"`
	// Failures counts failed refreshes since start; LastError is the last
	// attempt's, absent once one succeeded.
	Failures    uint64    `json:"refresh_failures"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
}

// MaterialStatus describes the set in a folder.
type MaterialStatus struct {
	SPIFFEID   string    `json:"spiffe_id"`
	Serial     string    `json:"serial"`
	NotAfter   time.Time `json:"not_after"`
	Generation uint64    `json:"generation"`
}

// ActionStatus is the last run of one reload action.
type ActionStatus struct {
	Action     string `json:"action"`
	Generation uint64 `json:"generation"`
	Attempts   int    `json:"attempts"`
	// State is one of the Action* states.
	State string `json:"state"`
	OK    bool   `json:"ok"`
	// Error is why the last run failed; NoServer why there was no server
	// to reload (not a failure).
	Error    string    `json:"error,omitempty"`
	NoServer string    `json:"no_server,omitempty"`
	At       time.Time `json:"at,omitzero"`
	Failures uint64    `json:"failures"`
}

// ActionStatus.State values.
const (
	ActionNotRun   = "not run yet"
	ActionOK       = "ok"
	ActionFailed   = "failed"
	ActionNoServer = "no server to reload"
)

func actionStatus(a reload.ActionStats) ActionStatus {
	st := ActionStatus{Action: a.Action, Generation: a.Generation, Attempts: a.Attempts, At: a.At, Failures: a.Failures}
	switch {
	case a.Generation == 0:
		st.State = ActionNotRun
	case a.NoServer():
		st.State, st.NoServer = ActionNoServer, errText(a.Err)
	case a.Failed():
		st.State, st.Error = ActionFailed, errText(a.Err)
	default:
		st.State, st.OK = ActionOK, true
	}
	return st
}

// SDSStatus is the SDS server and its clients.
type SDSStatus struct {
	Version     string         `json:"version"`
	Generation  uint64         `json:"generation"`
	StreamsOpen int64          `json:"streams_open"`
	Pushes      int64          `json:"pushes"`
	NACKs       int64          `json:"nacks"`
	Clients     []ClientStatus `json:"clients"`
}

// ClientStatus is one open SDS stream.
type ClientStatus struct {
	Node    string `json:"node"`
	Cluster string `json:"cluster,omitempty"`
	Stream  int64  `json:"stream"`
	Delta   bool   `json:"delta"`
	// Validation is the kind of validation_context the client gets
	// ("spiffe": Envoy's SPIFFE validator, "trusted_ca": plain roots, no
	// ALL), chosen per client as SPIRE Agent's SDS chooses; ValidationReason
	// says why (its Envoy version, its node metadata, or the config).
	Validation       string    `json:"validation"`
	ValidationReason string    `json:"validation_reason"`
	OpenedAt         time.Time `json:"opened_at"`
	AckedVersion     string    `json:"acked_version,omitempty"`
	AckedGeneration  uint64    `json:"acked_generation"`
	AckedAt          time.Time `json:"acked_at,omitzero"`
	NACKedVersion    string    `json:"nacked_version,omitempty"`
	NACK             string    `json:"nack,omitempty"`
	NACKedAt         time.Time `json:"nacked_at,omitzero"`
}

// Status gathers the document at now.
func (s *Server) Status(now time.Time) Status {
	st := Status{Version: s.cfg.Version, Time: now, SVIDs: []SVIDStatus{}, Bundles: []BundleStatus{},
		Sinks: []SinkStatus{}, Folders: []FolderStatus{}, JWTSVIDs: []JWTSVIDStatus{}}
	cur := s.cfg.Source.Current()
	folders := s.inspectFolders(now)
	st.Problems = s.judge(now, cur, folders)
	st.Ready = len(st.Problems) == 0
	if cur != nil {
		st.Generation, st.ReceivedAt = cur.Generation, cur.ReceivedAt
		for i, svid := range cur.SVIDs {
			leaf := svid.Certificates[0]
			st.SVIDs = append(st.SVIDs, SVIDStatus{
				SPIFFEID: svid.ID.String(), Default: i == 0, Serial: leaf.SerialNumber.Text(16),
				NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter, Hint: svid.Hint,
			})
		}
		for _, b := range cur.Bundles {
			st.Bundles = append(st.Bundles, BundleStatus{TrustDomain: b.TrustDomain().Name(), Authorities: len(b.X509Authorities())})
		}
	}
	c := s.cfg.Source.Counters()
	st.WorkloadAPI = WorkloadAPIStatus{Refused: c.Refused, WatchErrors: c.WatchErrors}
	for _, ss := range s.cfg.Source.SinkStatuses() {
		st.Sinks = append(st.Sinks, SinkStatus{
			Name: ss.Name, Generation: ss.Generation, Pending: ss.Pending, AppliedAt: ss.AppliedAt,
			TookSeconds: ss.Took.Seconds(), LatencySeconds: ss.Latency.Seconds(), Failures: ss.Failures, Error: errText(ss.Err),
			RetryingSince: ss.RetryingSince, Attempts: ss.Attempts, NextRetryAt: ss.NextRetryAt, Retries: ss.Retries,
		})
	}
	for i, f := range s.cfg.Folders {
		fs := FolderStatus{Dir: f.Dir(), Actions: []ActionStatus{}}
		// Status shows what is on disk even when it expires within
		// admin.min_validity (readiness says so); only then is the folder
		// read a second time, without that limit.
		m, err := folders[i].m, folders[i].err
		if errors.Is(err, folderstate.ErrExpiringSoon) {
			ic := f.InspectConfig(0)
			ic.Now = now
			m, err = folderstate.Inspect(ic)
		}
		if err != nil {
			fs.Problem = folderProblem(err)
		} else {
			fs.Material = &MaterialStatus{SPIFFEID: m.SPIFFEID.String(), Serial: m.Serial, NotAfter: m.NotAfter, Generation: m.Generation}
		}
		fst := f.Stats()
		fs.WriteFailures, fs.LastWriteError = fst.WriteFailures, errText(fst.LastWriteErr)
		for _, a := range fst.Actions {
			fs.Actions = append(fs.Actions, actionStatus(a))
		}
		st.Folders = append(st.Folders, fs)
	}
	if s.cfg.JWT != nil {
		for _, t := range s.cfg.JWT.Tokens() {
			st.JWTSVIDs = append(st.JWTSVIDs, JWTSVIDStatus{
				Dir: t.Dir, File: t.FileName, Audience: t.Audience, SPIFFEID: t.SPIFFEID, Expiry: t.Expiry,
				LastRefresh: t.RefreshedAt, NextRefresh: t.NextRefreshAt, Failures: t.Failures,
				LastError: errText(t.LastError), LastErrorAt: t.LastErrorAt,
			})
		}
	}
	if s.cfg.SDS != nil {
		ss := s.cfg.SDS.Stats()
		sst := &SDSStatus{Version: ss.Version, Generation: ss.Generation, StreamsOpen: ss.StreamsOpen,
			Pushes: ss.Pushes, NACKs: ss.NACKs, Clients: []ClientStatus{}}
		for _, c := range s.cfg.SDS.Clients() {
			sst.Clients = append(sst.Clients, ClientStatus{
				Node: c.Node, Cluster: c.Cluster, Stream: c.Stream, Delta: c.Delta, OpenedAt: c.OpenedAt,
				Validation: c.Validation.String(), ValidationReason: c.ValidationReason,
				AckedVersion: c.AckedVersion, AckedGeneration: c.AckedGeneration, AckedAt: c.AckedAt,
				NACKedVersion: c.NACKedVersion, NACK: c.NACK, NACKedAt: c.NACKedAt,
			})
		}
		st.SDS = sst
	}
	return st
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return oneline.Of(err.Error())
}

func (s *Server) status(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(s.Status(s.cfg.Now())); err != nil {
		s.log.Debug("admin: write /status", "error", err)
	}
}

// WriteText prints st for a human, as `sds-bridge status` shows it; now is
// the reader's clock, for "in 5m" and "3s ago".
func (st Status) WriteText(w io.Writer, now time.Time) error {
	var b strings.Builder
	// table aligns the rows of one section; details go below it, as a line
	// without tabs would end the alignment.
	table := func(rows [][]string) {
		tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		for _, r := range rows {
			fmt.Fprintln(tw, "  "+strings.Join(r, "\t"))
		}
		tw.Flush()
	}
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }

	state := "READY"
	if !st.Ready {
		state = "NOT READY"
	}
	p("sds-bridge %s: %s, generation %d (received %s)", st.Version, state, st.Generation, ago(st.ReceivedAt, now))
	for _, pr := range st.Problems {
		p("  ! %s", pr)
	}

	p("\nSVIDs")
	var rows [][]string
	for _, s := range st.SVIDs {
		def := ""
		if s.Default {
			def = "(default)"
		}
		rows = append(rows, []string{s.SPIFFEID, "serial " + s.Serial, "not after " + stamp(s.NotAfter) + " (" + left(s.NotAfter, now) + ")", def})
	}
	table(rows)
	p("Bundles")
	rows = nil
	for _, bd := range st.Bundles {
		rows = append(rows, []string{bd.TrustDomain, plural(bd.Authorities, "root")})
	}
	table(rows)
	if st.WorkloadAPI.Refused > 0 || st.WorkloadAPI.WatchErrors > 0 {
		p("Workload API: %d updates refused, %d watch errors since start", st.WorkloadAPI.Refused, st.WorkloadAPI.WatchErrors)
	}

	p("\nSinks")
	rows = nil
	var details []string
	for _, s := range st.Sinks {
		row := []string{s.Name, fmt.Sprintf("generation %d", s.Generation), "applied " + ago(s.AppliedAt, now),
			"delivery " + seconds(s.LatencySeconds), plural(int(s.Failures), "failure"), plural(int(s.Retries), "retry")}
		if s.Pending > 0 {
			row = append(row, fmt.Sprintf("generation %d pending", s.Pending))
		}
		rows = append(rows, row)
		switch {
		case !s.RetryingSince.IsZero():
			details = append(details, fmt.Sprintf("  %s: last apply failed, %s", s.Name,
				retryText(s.Pending, s.RetryingSince, int(s.Attempts), s.NextRetryAt, s.Error, now)))
		case s.Error != "":
			details = append(details, fmt.Sprintf("  %s: last apply failed: %s", s.Name, s.Error))
		}
	}
	table(rows)
	for _, d := range details {
		p("%s", d)
	}

	if len(st.Folders) > 0 {
		p("\nCredential folders")
	}
	for _, f := range st.Folders {
		if m := f.Material; m != nil {
			p("  %s: generation %d, serial %s, not after %s (%s)", f.Dir, m.Generation, m.Serial, stamp(m.NotAfter), left(m.NotAfter, now))
		} else {
			p("  %s: NOT USABLE: %s", f.Dir, f.Problem)
		}
		if f.WriteFailures > 0 {
			p("    %d write failures since start; last error: %s", f.WriteFailures, orNone(f.LastWriteError))
		}
		for _, a := range f.Actions {
			switch {
			case a.Generation == 0:
				p("    %s: not run yet", a.Action)
			case a.State == ActionNoServer:
				p("    %s: no server to reload for generation %d (%s): it reads the files in place when it starts; %s since start: %s",
					a.Action, a.Generation, ago(a.At, now), plural(int(a.Failures), "failed attempt"), a.NoServer)
			case a.OK:
				p("    %s: ok for generation %d (%s, %s); %s since start", a.Action, a.Generation, ago(a.At, now), plural(a.Attempts, "attempt"), plural(int(a.Failures), "failed attempt"))
			default:
				p("    %s: FAILED for generation %d after %s (%s); %s since start: %s",
					a.Action, a.Generation, plural(a.Attempts, "attempt"), ago(a.At, now), plural(int(a.Failures), "failed attempt"), a.Error)
			}
		}
	}

	if len(st.JWTSVIDs) > 0 {
		p("\nJWT-SVID files")
	}
	for _, j := range st.JWTSVIDs {
		path := filepath.Join(j.Dir, j.File)
		if j.LastRefresh.IsZero() {
			p("  %s: audience %q, NO TOKEN YET", path, j.Audience)
		} else {
			p("  %s: audience %q, %s, expires %s (%s), refreshed %s, next refresh %s",
				path, j.Audience, j.SPIFFEID, stamp(j.Expiry), left(j.Expiry, now), ago(j.LastRefresh, now), until(j.NextRefresh, now))
		}
		if j.LastError != "" {
			p("    refresh FAILING: %s since start, last %s: %s", plural(int(j.Failures), "failure"), ago(j.LastErrorAt, now), j.LastError)
		} else if j.Failures > 0 {
			p("    %s since start", plural(int(j.Failures), "failed refresh"))
		}
	}

	if sds := st.SDS; sds != nil {
		p("\nSDS: version %s (generation %d), %s open, %s, %s", orNone(sds.Version), sds.Generation,
			plural(int(sds.StreamsOpen), "stream"), plural(int(sds.Pushes), "push"), plural(int(sds.NACKs), "NACK"))
		rows, details = nil, nil
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
				acked = fmt.Sprintf("acknowledged generation %d (version %s, %s)", c.AckedGeneration, c.AckedVersion, ago(c.AckedAt, now))
			}
			validation := "validation " + c.Validation
			if c.ValidationReason != "" {
				validation += " (" + c.ValidationReason + ")"
			}
			rows = append(rows, []string{node, fmt.Sprintf("%s stream %d", kind, c.Stream), "connected " + ago(c.OpenedAt, now), validation, acked})
			if c.NACK != "" {
				details = append(details, fmt.Sprintf("  %s (%s stream %d) rejected version %s %s: %s", node, kind, c.Stream, c.NACKedVersion, ago(c.NACKedAt, now), c.NACK))
			}
		}
		table(rows)
		for _, d := range details {
			p("%s", d)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
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

func seconds(s float64) string {
	return round(time.Duration(s * float64(time.Second))).String()
}

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

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
