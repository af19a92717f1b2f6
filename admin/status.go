package admin

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/jwtfiles"
	"github.com/sds-bridge/sds-bridge/reload"
	"github.com/sds-bridge/sds-bridge/rotation"
)

// reading is what every part said at one instant: the Status is made
// from it and its Problems judged on it, so /status and /readyz agree.
type reading struct {
	now     time.Time
	cur     *rotation.Update // nil before the first
	counts  rotation.Counters
	sinks   []rotation.SinkStatus
	folders []folderReading // config order
	tokens  []jwtfiles.TokenStatus
	sds     *SDSStatus // nil without SDS
}

// folderReading is one folder: what its writer and actions did, and what
// is on disk (nil: not read under the current generation).
type folderReading struct {
	Folder
	stats filesink.Stats
	disk  *diskRead
}

// diskRead is one folder read as readiness judges it (m, err: with
// admin.min_validity) and as /status shows it (read again without that
// limit only when the set failed it alone).
type diskRead struct {
	m, shown      *filesink.Material
	err, shownErr error
}

// view is what a request renders; each reads only what it shows.
type view int

const (
	// probeView (/readyz) reads every folder, and of the SDS server only
	// the counts admin.require_sds_ack needs.
	probeView view = iota
	// metricsView (a scrape) reads no disk: each folder as last read under
	// the current generation, or judged by its sink alone. No SDS streams.
	metricsView
	// statusView (/status) reads everything, the oldest streams listed.
	statusView
)

// snapshot builds the one Status of a request at now, for v. The views
// that read the disk keep what they read and log a change of readiness.
func (s *Server) snapshot(now time.Time, v view) Status {
	r := reading{now: now, cur: s.cfg.Source.Current(), counts: s.cfg.Source.Counters(), sinks: s.cfg.Source.SinkStatuses()}
	var gen uint64 // 0 before the first Update
	if r.cur != nil {
		gen = r.cur.Generation
	}
	fromDisk := v != metricsView
	r.folders = s.readFolders(now, gen, fromDisk)
	if s.cfg.JWT != nil {
		r.tokens = s.cfg.JWT.Tokens()
	}
	if s.cfg.SDS != nil && (v != probeView || s.cfg.RequireSDSAck) {
		r.sds = sdsStatus(s.cfg.SDS, gen, v == statusView)
	}
	st := s.document(r)
	st.Problems = s.problems(r)
	st.Ready = len(st.Problems) == 0
	if fromDisk {
		s.noteReadiness(st.Problems)
	}
	return st
}

// readFolders reads every folder's stats, and its disk if fromDisk.
func (s *Server) readFolders(now time.Time, gen uint64, fromDisk bool) []folderReading {
	var disk []diskRead
	if fromDisk {
		disk = make([]diskRead, len(s.cfg.Folders))
		for i, f := range s.cfg.Folders {
			disk[i] = readFolder(f, s.cfg.MinValidity, now)
		}
	}
	s.mu.Lock()
	if fromDisk {
		s.lastDisk, s.lastDiskGen = disk, gen
	} else if s.lastDiskGen == gen {
		disk = s.lastDisk
	}
	s.mu.Unlock()
	out := make([]folderReading, len(s.cfg.Folders))
	for i, f := range s.cfg.Folders {
		out[i] = folderReading{Folder: f, stats: f.Stats()}
		if disk != nil {
			out[i].disk = &disk[i]
		}
	}
	return out
}

// readFolder is the one place a folder is read, as its consumer would.
func readFolder(f Folder, minValidity time.Duration, now time.Time) diskRead {
	inspect := func(minValidity time.Duration) (*filesink.Material, error) {
		ic := f.InspectConfig(minValidity)
		ic.Now = now
		return filesink.Inspect(ic)
	}
	var d diskRead
	d.m, d.err = inspect(minValidity)
	d.shown, d.shownErr = d.m, d.err
	if errors.Is(d.err, filesink.ErrExpiringSoon) {
		d.shown, d.shownErr = inspect(0)
	}
	return d
}

func (s *Server) document(r reading) Status {
	c := r.counts
	st := Status{Version: s.cfg.Build.String(), Time: r.now, SVIDs: []SVIDStatus{}, Bundles: []BundleStatus{}, Sinks: []SinkStatus{},
		Folders: []FolderStatus{}, JWTSVIDs: []JWTSVIDStatus{}, SDS: r.sds,
		WorkloadAPI: WorkloadAPIStatus{Refused: c.Refused, WatchErrors: c.WatchErrors, Reconnects: c.Reconnects}}
	if r.cur != nil {
		st.Generation, st.ReceivedAt = r.cur.Generation, r.cur.ReceivedAt
		for i, svid := range r.cur.SVIDs {
			leaf := svid.Certificates[0]
			st.SVIDs = append(st.SVIDs, SVIDStatus{SPIFFEID: svid.ID.String(), Default: i == 0, Serial: leaf.SerialNumber.Text(16),
				NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter, Hint: svid.Hint})
		}
		for _, b := range r.cur.Bundles {
			st.Bundles = append(st.Bundles, BundleStatus{TrustDomain: b.TrustDomain().Name(), Authorities: len(b.X509Authorities())})
		}
	}
	for _, ss := range r.sinks {
		st.Sinks = append(st.Sinks, SinkStatus{
			Name: ss.Name, Generation: ss.Generation, Pending: ss.Pending, AppliedAt: ss.AppliedAt,
			TookSeconds: ss.Took.Seconds(), LatencySeconds: ss.Latency.Seconds(), Failures: ss.Failures, Error: errText(ss.Err),
			RetryingSince: ss.RetryingSince, Attempts: ss.Attempts, NextRetryAt: ss.NextRetryAt, Retries: ss.Retries,
		})
	}
	for _, f := range r.folders {
		st.Folders = append(st.Folders, f.status(r.now))
	}
	for _, t := range r.tokens {
		st.JWTSVIDs = append(st.JWTSVIDs, JWTSVIDStatus{
			Dir: t.Dir, File: t.FileName, Audience: t.Audience, SPIFFEID: t.SPIFFEID, Expiry: t.Expiry,
			LastRefresh: t.RefreshedAt, NextRefresh: t.NextRefreshAt, Failures: t.Failures,
			LastError: errText(t.LastError), LastErrorAt: t.LastErrorAt,
		})
	}
	return st
}

// status is what is on disk in f, even when within admin.min_validity
// (readiness says so), and what its writer and actions did.
func (f folderReading) status(now time.Time) FolderStatus {
	fs := FolderStatus{Dir: f.Dir(), Actions: []ActionStatus{}, ReloadPending: f.stats.ReloadPending,
		WriteFailures: f.stats.WriteFailures, LastWriteError: errText(f.stats.LastWriteErr)}
	if d := f.disk; d != nil && d.shownErr != nil {
		fs.Problem = errText(d.shownErr)
	} else if d != nil {
		m := d.shown
		fs.Material = &MaterialStatus{SPIFFEID: m.SPIFFEID.String(), Serial: m.Serial, NotAfter: m.NotAfter, Generation: m.Generation}
	}
	for _, a := range f.stats.Actions {
		fs.Actions = append(fs.Actions, actionStatus(a, now))
	}
	return fs
}

func actionStatus(a reload.ActionStats, now time.Time) ActionStatus {
	st := ActionStatus{Action: a.Action, Generation: a.Generation, Attempts: a.Attempts, At: a.At, Failures: a.Failures}
	if a.Running() {
		st.Running, st.RunningGeneration, st.RunningSince = true, a.RunningGeneration, a.RunningSince
		st.RunningSeconds = now.Sub(a.RunningSince).Seconds()
	}
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

// sdsStatus is the one place the SDS server is read: the counts of
// acknowledgements of gen cover every stream; list adds the oldest
// MaxListedClients, escaped (printable).
func sdsStatus(srv SDS, gen uint64, list bool) *SDSStatus {
	ss := srv.Stats()
	streams, current, newest := srv.Acks(gen)
	st := &SDSStatus{Version: ss.Version, Generation: ss.Generation, StreamsOpen: ss.StreamsOpen, Pushes: ss.Pushes, NACKs: ss.NACKs,
		RefusedPeers: ss.RefusedPeers, ConnectionsOpen: ss.ConnectionsOpen, ConnectionsOverCap: ss.ConnectionsOverCap,
		StreamsOverLimit: ss.StreamsOverLimit, ClientsCurrent: current, NewestAcked: newest,
		Clients: []ClientStatus{}, ClientsNotListed: streams}
	if !list {
		return st
	}
	clients := srv.Clients()
	if len(clients) > MaxListedClients {
		clients = clients[:MaxListedClients]
	}
	st.ClientsNotListed = max(0, streams-len(clients))
	p := printable
	for _, c := range clients {
		st.Clients = append(st.Clients, ClientStatus{
			Node: p(c.Node), Cluster: p(c.Cluster), Stream: c.Stream, Delta: c.Delta, OpenedAt: c.OpenedAt,
			Wildcard: c.Wildcard, Subscribed: printableAll(c.Subscribed),
			Validation: c.Validation.String(), ValidationReason: p(c.ValidationReason),
			AckedVersion: p(c.AckedVersion), AckedGeneration: c.AckedGeneration, AckedAt: c.AckedAt,
			NACKedVersion: p(c.NACKedVersion), NACK: p(c.NACK), NACKedAt: c.NACKedAt,
		})
	}
	return st
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return oneLine(err.Error())
}

// oneLine collapses every run of white space, newlines included, so that
// a cause spanning lines cannot break a line-oriented reader of /readyz.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func (s *Server) status(w http.ResponseWriter, _ *http.Request) {
	s.writeStatus(w, s.snapshot(s.cfg.Now(), statusView))
}

func (s *Server) writeStatus(w http.ResponseWriter, st Status) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(st); err != nil {
		s.log.Debug("admin endpoint: write /status", "error", err)
	}
}
